"""The pretraining loop and its components (trainer.py says which).

`fastssl.train(cfg)` is also the Python API's entry point (run.py, exported by fastssl/api.py). Importing any module
of this package makes the package itself the attribute `fastssl.train` (Python sets a subpackage
on its parent), which would hide the function, so the package is made callable and calls it.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from fastssl.train.run import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
