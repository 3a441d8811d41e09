"""Streaming webdataset tars, the same on every backend, with a position a checkpoint can hold.

- `plan.py`: which ordinals each (rank, worker) slot reads in an epoch; re-planning the rest of
  an epoch for another layout;
- `shuffle.py`: the per-slot shuffle buffer, kept as positions so that it fast-forwards;
- `tar_reader.py`: samples out of tars by ordinal, with the standard library;
- `slots.py`: one slot's batches, with corrupt samples skipped and counted;
- `position.py`: the loader's position (epoch, step, each slot's shuffler position), saved in
  checkpoints, and the plan a resume continues with.

The torch backend runs the slots in DataLoader workers (fastssl/data/backends/torch_stream.py);
DALI runs them in its feeder (fastssl/data/backends/dali_loader.py).
"""
