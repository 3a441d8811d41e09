"""Clustering primitives shared by the clustering methods, all exact under data parallelism.

- `sinkhorn.py`: Sinkhorn-Knopp equipartitioned soft assignments (SwAV's codes); the sums run
  over every rank's columns, so R ranks give the codes of one process on the global batch.
- `kmeans.py`: spherical k-means on features sharded over ranks (DeepCluster v2): assignment is
  local, centroid sums are all-reduced, so every rank ends with the same centroids.
- `training_images.py`: this rank's disjoint share of the training set, in order and with the
  evaluation transform, for methods that cluster the whole training set each epoch.
"""

from fastssl.cluster.kmeans import assign_nearest, spherical_kmeans
from fastssl.cluster.sinkhorn import sinkhorn_knopp

__all__ = ["assign_nearest", "sinkhorn_knopp", "spherical_kmeans"]
