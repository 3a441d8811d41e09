"""`CorruptReport`: what `--data.skip_corrupt=true` skipped, each file named once per run.

A corrupt file is met again every epoch. Naming it each time buries the log, and a per-process
"warned once" set cannot stop that: DataLoader workers are separate processes, a file may meet a
different worker next epoch, and the webdataset workers are started afresh each epoch. So
workers only hand back what they skipped, with the batch, and the loader in the main process
reports it here: a warning the first time a file is skipped in the run, and after each epoch in
which files warned about earlier were skipped again, one line that counts them.
"""

from __future__ import annotations

import sys
import warnings


class CorruptReport:
    """One loader's skipped corrupt files (`what`: "image" or "webdataset sample")."""

    def __init__(self, what: str = "image"):
        self.what = what
        self.reported: set[str] = set()  # named in a warning already, this run
        self._epoch: set[str] = set()  # skipped in the current epoch
        self._again = 0  # of those, how many were reported in an earlier epoch

    def skipped(self, name: str, reason: str = "") -> None:
        """`name` was skipped in the current epoch: a warning the first time in the run."""
        if name in self._epoch:
            return
        self._epoch.add(name)
        if name in self.reported:
            self._again += 1
            return
        self.reported.add(name)
        detail = f" ({reason})" if reason else ""
        warnings.warn(f"skipping corrupt {self.what} {name}{detail}", stacklevel=3)

    def end_epoch(self) -> None:
        """The epoch's count line, when it skipped files already reported; the count starts over."""
        if self._again:
            n = len(self._epoch)
            print(f"fastssl: skipped {n} corrupt {self.what}{'s' if n != 1 else ''} this epoch "
                  f"({self._again} already reported)", file=sys.stderr, flush=True)
        self._epoch.clear()
        self._again = 0
