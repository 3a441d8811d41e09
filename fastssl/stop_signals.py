"""Stop signals, as clusters send them: one orderly stop at a step boundary, on every rank.

A run is asked to stop in several ways, and every one must end the same way (a checkpoint at the
step all ranks agree on, then exit status 128 + signal number, e.g. 143 for SIGTERM):

- SLURM preemption and `scancel` send SIGTERM to every process of the job step (the whole process
  group, DataLoader workers included); `--signal=B:USR1@120` sends SIGUSR1 to the batch shell,
  which `launch/slurm.sbatch` turns into SIGTERM for torchrun;
- `timeout`, `kill -- -PGID` and Ctrl-C signal the whole foreground process group;
- torchrun, given SIGTERM, forwards it with `killpg` to each worker's own session (so again to the
  DataLoader workers) and SIGKILLs whatever still runs `--shutdown_timeout` seconds later.

The main process only records the signal (`StopSignals`); the training step ORs the request across
ranks in the all-reduce it already makes, so all ranks stop after the same step. Loader worker
processes must survive the signal until the main process has stopped: PyTorch's DataLoader workers
install a C-level SIGTERM handler that kills the worker on any SIGTERM not sent by its parent, after
which the main process fails with "DataLoader worker ... is killed by signal: Terminated". So every
worker calls `ignore_stop_signals` first thing (its `worker_init_fn`); the main process ends it
normally when the loader shuts down.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # registers its exit handler now, so ours (registered later) runs first
import signal
from typing import Any

# SIGUSR1: what SLURM's --signal sends ahead of a time limit, and what users send to ask for a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """`worker_init_fn` of every loader worker: the main process decides when workers end."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def kill_workers_at_exit() -> None:
    """In the main process, once: SIGKILL the loader workers still alive when the interpreter exits.

    At exit, multiprocessing terminates daemonic children with SIGTERM and waits for them; loader
    workers ignore SIGTERM (above), so a run that ends by an exception while any loader (training,
    evaluation, DeepCluster's image pass) still holds workers would wait forever. Registered after
    multiprocessing's own handler, so it runs first (atexit is last-in, first-out).
    """
    global _KILL_REGISTERED
    if not _KILL_REGISTERED:
        atexit.register(_kill_daemonic_children)
        _KILL_REGISTERED = True


_KILL_REGISTERED = False


def _kill_daemonic_children() -> None:
    for child in multiprocessing.active_children():
        if child.daemon:  # DataLoader workers; never a process the user started
            child.kill()


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + int(signum)


class StopSignals:
    """Records the first stop signal; a second SIGINT (Ctrl-C twice) means "now" and interrupts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "StopSignals":
        for s in STOP_SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (a notebook's worker thread): no handlers there
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
