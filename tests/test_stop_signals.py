"""Stop signals: the main process records one, loader workers survive it."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import Dataset

from fastssl.data.backends.torch_loader import UserErrorDataLoader
from fastssl.stop_signals import STOP_SIGNALS, StopSignals, exit_status, ignore_stop_signals


def test_first_signal_is_kept_and_a_second_ctrl_c_interrupts():
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGUSR1 and stop.name == "SIGUSR1"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is not stop._handle  # handlers restored


def test_exit_status_follows_the_shell_convention():
    assert exit_status(signal.SIGTERM) == 143 and exit_status(signal.SIGINT) == 130
    assert exit_status(signal.SIGUSR1) == 138


def test_ignore_stop_signals_ignores_every_stop_signal():
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        ignore_stop_signals(0)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Slow(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([i, os.getpid()])


def test_loader_workers_survive_a_sigterm_sent_to_the_group():
    """PyTorch's workers die on any SIGTERM not sent by their parent (what a group kill is)."""
    loader = UserErrorDataLoader(_Slow(), batch_size=1, num_workers=2, persistent_workers=True)
    it = iter(loader)
    pids = {int(next(it)[0, 1]) for _ in range(2)}
    assert len(pids) >= 1
    with StopSignals():  # the main process would be asked too; here it only records
        for pid in pids:
            subprocess.run(["kill", "-TERM", str(pid)], check=True)  # not the parent: as `kill -- -PGID`
        rest = [int(b[0, 0]) for b in it]
    assert rest == list(range(2, 8))


def test_an_error_while_loader_workers_live_does_not_block_the_exit(tmp_path):
    """Workers ignore SIGTERM, which is how the interpreter's exit ends daemonic children: a run that
    raises while any loader holds live workers (here an iterator kept alive by a global) must still
    exit, with the error's status."""
    code = (
        "import torch\n"
        "from fastssl.data.backends.torch_loader import UserErrorDataLoader\n"
        "loader = UserErrorDataLoader(torch.arange(64.0), batch_size=4, num_workers=2)\n"
        "it = iter(loader); next(it)\n"
        "raise RuntimeError('a bug after the workers started')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 1 and "a bug after the workers started" in r.stderr, r.stderr[-2000:]
