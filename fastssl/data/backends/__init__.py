"""How views are made: one module per backend (torch, dali / dali-cpu, gpu-tensor), each reading
a `ViewSpec` (fastssl.data.views) and the per-rank order of sharding.py."""
