"""Parallelism, applied from outside the single-device methods.

- `parallelize`: what every engine applies first (memory format, synchronised BatchNorm,
  activation checkpointing, compile), in one documented order;
- `engines`: DDP, FSDP2 and DeepSpeed ZeRO behind one interface (`--dist.strategy`);
- `sync_batchnorm`: BatchNorm over the global batch on any device;
- `comm_counter`: the collectives (and bytes) a rank issues, per mesh dim, for `fastssl bench step`.

The data-parallel mesh (`--dist.dp_replicate` x `--dist.dp_shard`) and the process group are
`fastssl/parallel_dims.py`, outside this package because `fastssl.distributed` (which this package
imports) registers the dims.
"""
