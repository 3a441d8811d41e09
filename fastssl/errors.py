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
