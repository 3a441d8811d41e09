"""KoLeo regulariser (Kozachenko-Leonenko entropy estimator; Sablayrolles et al., ICLR 2019,
"Spreading vectors for similarity search"), as used by DINOv2 (Oquab et al., 2023).

Follows facebookresearch/dinov2 dinov2/loss/koleo_loss.py: L2-normalise the rows, find each row's
nearest other row by the largest dot product with the diagonal set to -1 (so a row never picks
itself; with duplicate rows it picks a duplicate), and return -mean(log(d_i + eps)) with d_i the
Euclidean distance to that neighbour. As in the reference (nn.PairwiseDistance(2, eps=1e-8)),
1e-8 is added to the difference before its norm, so duplicates give d = 1e-8 sqrt(D) and a
finite loss and gradient instead of the norm's undefined gradient at 0.

Math is float32 whatever the input dtype (the reference disables autocast). The neighbour choice
is not differentiated (argmax), as in the reference.

Per rank: the neighbours are searched among this rank's rows only, as DINOv2 does; DDP averages
the per-rank losses. 2 ranks therefore do NOT equal 1 process on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastssl.errors import FastSSLError

EPS = 1e-8  # koleo_loss.py's default eps: normalisation and log(d + eps)
PDIST_EPS = 1e-8  # koleo_loss.py's nn.PairwiseDistance(2, eps=1e-8), added to the difference


def koleo_loss(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KoLeo loss of this rank's embeddings x: [N, D], N >= 2; a float32 scalar."""
    if x.dim() != 2 or x.shape[1] == 0:
        raise FastSSLError(f"koleo_loss needs [N, D] embeddings with D > 0, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise FastSSLError(f"koleo_loss needs at least 2 samples to find neighbours, got {x.shape[0]}")
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)  # [N, D]
    with torch.no_grad():
        dots = x @ x.T  # [N, N]
        # The reference fills -1, which an antipodal row ties (or, rounded, undercuts) so a row
        # could pick itself; -inf never does and changes nothing else.
        dots.fill_diagonal_(float("-inf"))
        nearest = dots.argmax(dim=1)  # [N]
    dist = F.pairwise_distance(x, x[nearest], p=2, eps=PDIST_EPS)  # [N]
    return -torch.log(dist + eps).mean()
