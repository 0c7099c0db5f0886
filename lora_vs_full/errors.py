"""One exception type for problems the user can fix.

Library code raises :class:`UserError` with a single line that names the bad value and the fix; the
command-line entry points (``lora_vs_full.cli``) print it as ``error: ...`` and exit with status 2,
without a traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (path, id, config value, data file) — message is one line."""
