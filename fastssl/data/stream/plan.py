"""Which samples of a stream each (rank, worker) slot reads in one epoch, and in which order.

Samples are numbered by their place in the epoch's shard order ("ordinals"): the shards are
permuted by a permutation seeded by (seed, epoch), as webdataset's `shuffle` on the shard list,
and their samples, counted from the `.idx` files or the tar headers, are concatenated. The epoch
reads ordinals [0, steps * G) (G = the global batch) and drops the last `N mod G`: the tail of the
permuted order, so a different set each epoch. Every rank thus takes `steps = N // G` steps and
none waits at the epoch's end for a rank that ran out.

A plan's ordinals are cut into contiguous runs, one per slot in (rank, worker) order, as long as
the slot's steps need: DataLoader takes batches from its workers in turn, so worker w of a rank
serves steps first_step + w, first_step + w + W, ... Runs of one shard thus go to one slot and are
read sequentially; a slot starts mid-shard at most once. Each slot shuffles its run with a
`PositionShuffler` seeded by (seed, epoch, first_step, rank, worker).

A resume on another layout (ranks x workers) re-plans the rest of the epoch: `remaining_plan`
replays each old slot's shuffler to the saved position and collects what none emitted, the
samples of the remaining steps, with none repeated and none dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fastssl.data.stream.shuffle import PositionShuffler

Intervals = list[tuple[int, int]]


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of the shards; the same on every rank."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x57A2]).permutation(num_shards)


def cut(intervals: Intervals, start: int, stop: int) -> Intervals:
    """The ordinals at positions [start, stop) of the concatenated `intervals`."""
    out, pos = [], 0
    for lo, hi in intervals:
        a, b = max(start - pos, 0), min(stop - pos, hi - lo)
        if a < b:
            out.append((lo + a, lo + b))
        pos += hi - lo
        if pos >= stop:
            break
    return out


def merge(intervals: Intervals) -> Intervals:
    out: Intervals = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def total(intervals: Intervals) -> int:
    return sum(hi - lo for lo, hi in intervals)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    first_step: int  # the plan covers the epoch's steps first_step .. steps - 1
    steps: int  # steps of the whole epoch
    batch: int  # per rank
    ranks: int
    workers: int  # slots per rank: max(1, loader workers)
    intervals: tuple[tuple[int, int], ...]  # sorted ordinal ranges the plan reads

    def slot_steps(self, worker: int) -> int:
        return len(range(worker, self.steps - self.first_step, self.workers))

    def slot_run(self, rank: int, worker: int) -> Intervals:
        """The ordinals of slot (rank, worker); short only when corrupt samples ate the rest."""
        need = [self.slot_steps(w) * self.batch for w in range(self.workers)]
        start = rank * sum(need) + sum(need[:worker])
        return cut(list(self.intervals), start, start + need[worker])

    def slot_seed(self, seed: int, rank: int, worker: int) -> int:
        key = [seed & 0xFFFFFFFF, self.epoch, self.first_step, rank, worker, 0x5B0F]
        return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])

    def slot_of_step(self, step: int) -> int:
        return (step - self.first_step) % self.workers

    def same_layout(self, ranks: int, workers: int) -> bool:
        return (self.ranks, self.workers) == (ranks, workers)

    def state_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_state(state: dict) -> "EpochPlan":
        return EpochPlan(**{**state, "intervals": tuple(tuple(i) for i in state["intervals"])})


def fresh_plan(num_samples: int, epoch: int, batch: int, ranks: int, workers: int) -> EpochPlan:
    steps = num_samples // (batch * ranks)
    return EpochPlan(epoch, 0, steps, batch, ranks, workers, ((0, steps * batch * ranks),))


def consumed_by_slot(plan: EpochPlan, rank: int, worker: int, step: int) -> int:
    """Samples slot (rank, worker) emitted before `step` when none was corrupt (a position
    that old checkpoints, without the loader's state, imply)."""
    done = len(range(worker, max(step - plan.first_step, 0), plan.workers))
    return done * plan.batch


def remaining_plan(
    plan: EpochPlan, emitted: dict[tuple[int, int], int], seed: int, shuffle: int, step: int, ranks: int, workers: int
) -> EpochPlan:
    """The plan of steps step.. of `plan`'s epoch on `ranks` x `workers`, given how many samples
    each old slot (rank, worker) emitted: exactly the samples none of them emitted."""
    left: Intervals = []
    for r in range(plan.ranks):
        for w in range(plan.workers):
            run = plan.slot_run(r, w)
            sh = PositionShuffler(total(run), shuffle, plan.slot_seed(seed, r, w))
            sh.fast_forward(emitted.get((r, w), consumed_by_slot(plan, r, w, step)))
            for a, b in sh.remaining():
                left += cut(run, a, b)
    global_batch = plan.batch * plan.ranks
    return EpochPlan(plan.epoch, step, plan.steps, global_batch // ranks, ranks, workers, tuple(merge(left)))
