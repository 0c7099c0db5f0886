"""Shared plumbing for the console scripts: config location and the one-line error contract."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from lora_vs_full.errors import UserError

# Configs ship inside the package so installed console scripts find them from any directory.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def user_errors_exit(fn):
    """Turn a :class:`UserError` into ``error: <message>`` on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
