"""The one exception type that reaches users as a one-line message.

Anything the user can fix (a path, a config key, a corrupt file, an impossible shape) raises
`FastSSLError` with a sentence that names the fix. The CLI prints it as `fastssl: error: ...`
and exits 2 instead of showing a traceback; everything else is a bug and keeps its traceback.
"""


class FastSSLError(Exception):
    """A user-fixable problem. The message is one line and says what to change."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def did_you_mean(name: str, choices, cutoff: float = 0.5) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close.

    The one home of the suggestion every "unknown X" error carries (keys, recipes, methods, models).
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" Did you mean '{close[0]}'?" if close else ""


# errno values the machine, not fastssl, caused; each with the change that gets past it.
_OS_FIXES = {
    "ENOSPC": "free space on that disk or write to another one (training: --train.out)",
    "EDQUOT": "free space within your quota or write to another disk (training: --train.out)",
    "EROFS": "the file system is read-only: write to another folder (training: --train.out)",
    "EACCES": "check its permissions or use a folder you can write (training: --train.out)",
    "EPERM": "check its permissions or use a folder you can write (training: --train.out)",
    "ENOTDIR": "a part of that path is a file, not a folder: choose another path",
}
_OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "defaultcpuallocator")


def environment_error(exc: BaseException, oom_fix: str) -> FastSSLError | None:
    """The one-line error for a failure the machine caused (disk full, read-only folder, out of
    memory), or None: anything else is a bug and keeps its traceback.

    `oom_fix` names the command's own knob (training's batch size differs from evaluation's).
    """
    import errno
    import os
    import re

    if isinstance(exc, OSError) and exc.errno is not None:
        fix = _OS_FIXES.get(errno.errorcode.get(exc.errno, ""))
        if fix is None:
            return None
        where = f" ({exc.filename})" if exc.filename else ""
        return FastSSLError(f"{exc.strerror or os.strerror(exc.errno)}{where}; {fix}")
    text = str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and any(m in text.lower() for m in _OOM_MARKERS)):
        # The allocator's first sentence says how much it wanted; the rest is its internals.
        first = re.sub(r"^\[enforce fail at [^\]]*\][^.]*\.\s*", "", text.strip()).split("\n")[0]
        return FastSSLError(f"out of memory ({first[:200] or type(exc).__name__}); {oom_fix}")
    return None
