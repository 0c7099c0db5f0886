"""Atomic writes: a file is either absent or complete, never half-written.

Every result file goes through these helpers: write to a temporary sibling, fsync, ``os.replace``.
The file gets the permissions an ordinary ``open()`` would give it under the user's umask (not the
0600 of the temporary file), so results on a shared filesystem stay readable to the group. A write
that fails for a reason the user can fix (an unwritable or missing directory, a full disk, a quota)
removes its temporary file and raises one-line :class:`UserError` naming the path and the fix; the
destination keeps its previous content (or stays absent), so nothing half-written reads as complete.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_vs_full.errors import UserError

# errno values that mean "the user's filesystem refuses this write", not a bug in the code
_FS_ERRORS = {
    errno.EACCES: "permission denied: choose a writable location or fix the directory's permissions",
    errno.EPERM: "permission denied: choose a writable location or fix the directory's permissions",
    errno.EROFS: "the filesystem is read-only: choose a writable location",
    errno.ENOSPC: "no space left on the device: free space (or point paths.results_dir elsewhere) and rerun",
    errno.EDQUOT: "disk quota exceeded: free space (or point paths.results_dir elsewhere) and rerun",
    errno.ENOTDIR: "a parent of the path is a file, not a directory: choose another location",
    errno.EEXIST: "a parent of the path is a file, not a directory: choose another location",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the current umask (0755 under umask 022)."""
    return 0o777 & ~_umask()


def fs_error(exc: OSError, path: str | os.PathLike, what: str = "write") -> UserError | OSError:
    """A one-line :class:`UserError` for a filesystem refusal (EACCES, ENOSPC, ...); else ``exc`` itself."""
    fix = _FS_ERRORS.get(exc.errno)
    if fix is None:
        return exc
    return UserError(f"cannot {what} {path}: {fix}")


def ensure_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p`` that turns a refusal (read-only parent, full disk) into a one-line UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(exc, path, "create the directory") from None
    return path


def check_writable(directory: str | os.PathLike, what: str = "out") -> Path:
    """Prove that ``directory`` can be created and written, BEFORE hours of work, leaving nothing behind.

    A read-only location, a file in the way or a full disk is a one-line UserError naming ``what``."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what}={directory} is not writable: {existing} is a file, not a directory; choose "
                        "another location")  # fmt: skip
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        err = fs_error(exc, directory)
        raise (
            UserError(f"{what}={directory} is not writable ({err})") if isinstance(err, UserError) else exc
        ) from None
    return directory


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise fs_error(exc, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, file_mode())  # mkstemp creates 0600; give the umask's mode
        os.replace(tmp_path, path)
    except OSError as exc:
        _discard(tmp_path)
        raise fs_error(exc, path) from None
    except BaseException:
        _discard(tmp_path)
        raise
    return path


def _discard(tmp_path: Path) -> None:
    try:
        if tmp_path.is_dir():
            import shutil

            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort on a failing filesystem
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``df.to_parquet``, ``safetensors.save_file``) then move into place."""
    return _atomic(path, writer)


def atomic_dir(dest: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Fill a fresh temporary sibling directory with ``writer(tmp_dir)``, then swap it in for ``dest``.

    The directory gets the umask's mode (``mkdtemp`` makes 0700). A previous ``dest`` is replaced only
    after the new one is complete.
    """
    import shutil

    dest = Path(dest)
    ensure_dir(dest.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as exc:
        raise fs_error(exc, dest) from None
    try:
        writer(tmp)
        _umask_tree(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fs_error(exc, dest) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _umask_tree(root: Path) -> None:
    """Give a freshly written tree the umask's modes (some writers, e.g. safetensors, create 0600 files)."""
    fmode, dmode = file_mode(), dir_mode()
    os.chmod(root, dmode)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), dmode)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), fmode)


def write_table(df, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write a pandas DataFrame as ``<stem>.parquet`` and ``<stem>.csv``, each atomically."""
    stem = Path(stem)
    pq = atomic_write_with(stem.with_suffix(".parquet"), lambda p: df.to_parquet(p, index=False))
    csv = atomic_write_with(stem.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    return pq, csv


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a corrupt or truncated one is a one-line UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is corrupt (not valid JSON: {exc}): delete it (or the directory holding it) and rerun "
            "the command that wrote it"
        ) from None
