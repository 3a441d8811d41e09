"""`python -m fastssl ...`, which is also how torchrun launches it: `torchrun -m fastssl train ...`."""

import sys

from fastssl.cli import main

sys.exit(main())
