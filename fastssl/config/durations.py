"""Durations and intervals written in config values: `--train.time_budget=1h30m`,
`--eval.knn_every=2m` or `=500` (steps). Parsed here, in the config package, so that
`Config.validate()` rejects a malformed one before any work, as `train` does."""

from __future__ import annotations

import re

from fastssl.errors import FastSSLError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '2h30m', or plain seconds -> seconds. '' or '0' -> 0 (no budget)."""
    s = str(text).strip().lower()
    if s in ("", "0"):
        return 0.0
    try:
        return float(s)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", s).strip():
        raise FastSSLError(f"--train.time_budget={text!r} is not a duration; write e.g. 10m, 2h, 1h30m or 600 (seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_every(text: str | int) -> tuple[int, float]:
    """'' / '0' -> off; '500' -> every 500 steps; '2m' / '90s' -> every 2 min / 90 s of training.

    Returns (steps, seconds), at most one of them non-zero.
    """
    s = str(text).strip().lower()
    if s in ("", "0"):
        return 0, 0.0
    if s.isdigit():
        return int(s), 0.0
    try:
        seconds = parse_duration(s)
    except FastSSLError:
        seconds = -1.0
    if seconds <= 0:
        raise FastSSLError(f"--eval.knn_every={text!r} is neither a step count nor a duration; "
                           f"write e.g. --eval.knn_every=500 (steps) or --eval.knn_every=2m")
    return 0, seconds
