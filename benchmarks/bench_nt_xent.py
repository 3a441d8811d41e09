"""Kept for old commands: the same as `fastssl bench loss ...` (see benchmarks/README.md).

    python benchmarks/bench_nt_xent.py --sizes 4096,65536 --dtype bf16
"""

import sys

from fastssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "loss", *sys.argv[1:]]))
