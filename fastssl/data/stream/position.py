"""A stream loader's position, what a checkpoint saves of it, and the plan a resume continues with.

The position of a rank is (epoch, step) plus, per slot (worker) of the rank, its shuffler position
(`emitted`: samples it took from its run, corrupt ones included). Checkpoints save every rank's
(`state_dict`, gathered by the checkpointer); `load_state_dict` takes that list.

On resume at (epoch, step):
- the same layout (ranks x workers) continues the saved plan, each slot fast-forwarded to its
  saved position: the very batches the uninterrupted run would have seen;
- another layout re-plans the rest of the epoch from every old slot's position
  (`remaining_plan`): each remaining sample once, none dropped, and `begin` returns the one line
  that says so;
- no saved state (a checkpoint from before this) or a fresh epoch: the plan is the epoch's own,
  and positions are those the step implies when nothing was corrupt.
"""

from __future__ import annotations

from typing import Any

from fastssl.data.stream.plan import EpochPlan, consumed_by_slot, fresh_plan, remaining_plan, total
from fastssl.errors import FastSSLError


class StreamPosition:
    def __init__(self, num_samples: int, batch: int, rank: int, ranks: int, workers: int, seed: int, shuffle: int):
        self.num_samples, self.batch, self.seed, self.shuffle = num_samples, batch, seed, shuffle
        self.rank, self.ranks, self.workers = rank, ranks, workers
        self.plan = fresh_plan(num_samples, 0, batch, ranks, workers)
        self.step = 0
        self.emitted: dict[int, int] = {}
        self.corrupt = self.padded = 0
        self._saved: list[dict[str, Any]] | None = None
        self._before: dict[str, Any] | None = None  # the position before the latest batch

    @property
    def steps(self) -> int:
        return self.plan.steps

    def begin(self, epoch: int, start_step: int) -> str | None:
        """Set the plan for (epoch, start_step); returns the re-plan line when the layout changed."""
        saved = self._saved if self._saved and (self._saved[0]["epoch"], self._saved[0]["step"]) == (epoch, start_step) else None
        self._saved = None
        note = None
        if saved is None:
            plan = fresh_plan(self.num_samples, epoch, self.batch, self.ranks, self.workers)
            emitted = {w: consumed_by_slot(plan, self.rank, w, start_step) for w in range(self.workers)}
        else:
            old = EpochPlan.from_state(saved[0]["plan"])
            self._check_batch(old)
            by_slot = {(s["rank"], int(w)): n for s in saved for w, n in s["emitted"].items()}
            if old.same_layout(self.ranks, self.workers):
                plan = old
                emitted = {w: by_slot.get((self.rank, w), consumed_by_slot(old, self.rank, w, start_step))
                           for w in range(self.workers)}
            else:
                plan = remaining_plan(old, by_slot, self.seed, self.shuffle, start_step, self.ranks, self.workers)
                emitted = {w: 0 for w in range(self.workers)}
                note = (f"fastssl: epoch {epoch} was at step {start_step} on {old.ranks} rank(s) x {old.workers} "
                        f"stream(s) each; its {total(plan.intervals)} remaining samples are re-split over "
                        f"{self.ranks} x {self.workers}: none repeated, none dropped")
        self.plan, self.step, self.emitted = plan, start_step, emitted
        self._before = None
        return note

    def _check_batch(self, old: EpochPlan) -> None:
        if old.batch * old.ranks != self.batch * self.ranks:
            raise FastSSLError(
                f"the checkpoint's stream position is for a global batch of {old.batch * old.ranks}, this run's "
                f"is {self.batch * self.ranks}; resume with --train.batch_size={old.batch * old.ranks}"
            )

    def slot_for(self, step: int) -> int:
        return self.plan.slot_of_step(step)

    def batches_left(self, worker: int) -> int:
        done = len(range(worker, self.step - self.plan.first_step, self.workers))
        return self.plan.slot_steps(worker) - done

    def record(self, worker: int, emitted: int, corrupt: int, padded: int) -> None:
        """After the loader yielded a batch of slot `worker`."""
        self._before = self._snapshot()
        self.emitted[worker] = emitted
        self.step += 1
        self.corrupt += corrupt
        self.padded += padded

    def _snapshot(self) -> dict[str, Any]:
        return {"kind": "stream", "epoch": self.plan.epoch, "step": self.step, "rank": self.rank,
                "plan": self.plan.state_dict(), "emitted": dict(self.emitted),
                "corrupt": self.corrupt, "padded": self.padded}

    def state_dict(self, epoch: int, step: int) -> dict[str, Any]:
        """The position when the training loop is at (epoch, step). The loop may hold one batch it
        did not train (a stop came), so that may be the position before the latest batch. Any
        other (epoch, step) gets no slot positions: a resume there derives them (`begin`)."""
        for state in (self._snapshot(), self._before):
            if state and (state["epoch"], state["step"]) == (epoch, step):
                return state
        return {"kind": "stream", "epoch": epoch, "step": step, "rank": self.rank}

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        """Every saved rank's state (the checkpoint's list); used by the next `begin` that matches."""
        states = [s for s in states if s and s.get("kind") == "stream" and "plan" in s]
        self._saved = sorted(states, key=lambda s: s["rank"]) or None
        if self._saved:
            self.corrupt = sum(s["corrupt"] for s in self._saved if s["rank"] == self.rank)
