"""Kept for old commands: the same as `fastssl bench loader ...` (see benchmarks/README.md).

    python benchmarks/bench_loader.py --data ../shared/data/imagenet-sample --backend torch,dali-cpu,gpu-tensor
"""

import sys

from fastssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "loader", *sys.argv[1:]]))
