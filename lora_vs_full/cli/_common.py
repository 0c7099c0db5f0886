"""Shared plumbing for the console scripts: config location and the one-line error contract."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from lora_vs_full.errors import UserError



def _config_dir() -> str:
    """The one config tree: the top-level ``conf/`` of a clone, else the copy a wheel ships as ``lora_vs_full/conf``.

    ``LVF_CONFIG_DIR`` points every command at another tree (a lab's fork of the presets).
    """
    if os.environ.get("LVF_CONFIG_DIR"):
        return str(Path(os.environ["LVF_CONFIG_DIR"]).resolve())
    package = Path(__file__).resolve().parent.parent
    clone = package.parent / "conf"
    if (clone / "train.yaml").is_file() and (package.parent / "pyproject.toml").is_file():
        return str(clone)
    return str(package / "conf")


CONFIG_DIR = _config_dir()


def _register_resolvers() -> None:
    """``${lvf.paper_tasks:}`` in any yaml: the paper's task order, whose one home is the data registry."""
    from omegaconf import OmegaConf

    from lora_vs_full.data.registry import PAPER_TASK_ORDER

    OmegaConf.register_new_resolver("lvf.paper_tasks", lambda: list(PAPER_TASK_ORDER), replace=True)


_register_resolvers()  # every entry point and compose helper imports CONFIG_DIR from here


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
