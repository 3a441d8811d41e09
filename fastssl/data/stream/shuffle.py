"""The shuffle buffer of a stream, kept as sample positions so that it can be fast-forwarded.

webdataset's `shuffle(bufsize)` (webdataset/filters.py `_shuffle`): every sample read is appended
to a buffer; once it holds `size` samples, a uniformly chosen one is swapped to the end and
emitted; at the end of the stream the rest drains the same way. Here the buffer holds positions
(ints) and the bytes live beside it, keyed by position. The emission order is then a function of
(number of samples, size, seed) alone, so a resume at emission t replays t emissions on ints,
with no I/O, and then reads only the positions the buffer holds and those after it.
"""

from __future__ import annotations

import random


class PositionShuffler:
    """Emits positions 0..n-1 in shuffle-buffer order; `pushed` positions have entered so far."""

    def __init__(self, n: int, size: int, seed: int):
        self.n, self.size = n, max(1, size)
        # random.Random: ~0.3 us a draw (numpy's Generator.integers is ~10x that per call), and its
        # sequence for a seed has not changed since Python 3.2.
        self.rng = random.Random(seed)
        self.buf: list[int] = []
        self.pushed = 0
        self.emitted = 0

    def next_needs(self) -> int | None:
        """The position that must be read before the next `step()`, or None when none is."""
        return self.pushed if self.pushed < self.n else None

    def step(self) -> int | None:
        """Push the next position (if any); return the emitted position, or None while filling."""
        if self.pushed < self.n:
            self.buf.append(self.pushed)
            self.pushed += 1
            if len(self.buf) < self.size:
                return None
        if not self.buf:
            return None
        k = self.rng.randrange(len(self.buf))
        self.buf[k], self.buf[-1] = self.buf[-1], self.buf[k]
        self.emitted += 1
        return self.buf.pop()

    def done(self) -> bool:
        return self.emitted >= self.n

    def fast_forward(self, emitted: int) -> None:
        """Replay until `emitted` positions came out (ints only, no reads)."""
        while self.emitted < min(emitted, self.n):
            self.step()

    def remaining(self) -> list[tuple[int, int]]:
        """What is left, as sorted half-open ranges: the buffer's positions, then every unread one."""
        left = [(p, p + 1) for p in sorted(self.buf)]
        return left + ([(self.pushed, self.n)] if self.pushed < self.n else [])
