"""Atomic writes: a file is either absent or complete, never half-written.

Every result file goes through these helpers: write to a temporary sibling, fsync, ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``df.to_parquet``, ``safetensors.save_file``) then move into place."""
    return _atomic(path, writer)


def write_table(df, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write a pandas DataFrame as ``<stem>.parquet`` and ``<stem>.csv``, each atomically."""
    stem = Path(stem)
    pq = atomic_write_with(stem.with_suffix(".parquet"), lambda p: df.to_parquet(p, index=False))
    csv = atomic_write_with(stem.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    return pq, csv


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
