"""One lifecycle for every unit of work that writes a directory: a training run, a continual stage, an
analysis / pseudo-loss / intervention part.

The contract, the same everywhere:

* **Idempotent.** A unit is complete iff its marker file (``final.json``, ``stage.json``,
  ``source.json``, ...) exists; it is written last and atomically (:mod:`lora_vs_full.storage`). A rerun
  with the same identity skips a complete unit.
* **Loud on a config mismatch.** A unit that is complete, or holds resumable state, made with another
  identity is refused with the differing keys (:func:`config_diff`, :func:`refuse_mismatch`) unless the
  caller passes ``overwrite=true``.
* **One writer.** :func:`locked` holds an exclusive lock (a ``.<name>.lock`` file beside the
  directory, holding the owner's pid and host) for the whole unit, so a second process on the same unit
  refuses with a message naming the holder. The lock is a kernel ``flock``: a process that dies
  (``kill -9``, OOM, node reboot) releases it, so a stale lock file left by a dead process is taken over
  without anyone deleting it. On filesystems without ``flock`` the pid is checked instead (same host:
  a dead pid is taken over; another host: the message says how to remove the lock).
* **Resumable.** Long units keep resumable state inside their directory (training: ``state/``, see
  ``lora_vs_full.training.loop``; continual: complete stages) and pick it up on the rerun.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lora_vs_full.errors import UserError


# ---------------------------------------------------------------- identity comparison
def config_diff(old, new, prefix: str = "") -> list[str]:
    """``["optim.lr: 1e-05 -> 2e-05", ...]``: the leaves that differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += config_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def describe_diff(changes: list[str], shown: int = 3) -> str:
    """The first ``shown`` differences joined on one line, plus a count of the rest."""
    text = "; ".join(changes[:shown])
    return text + (f"; ... ({len(changes)} differences)" if len(changes) > shown else "")


def refuse_mismatch(where, what: str, changes: list[str], fix: str) -> None:
    """Raise the one-line UserError for a unit made with another config."""
    if changes:
        raise UserError(
            f"{where} holds {what} made with a different config ({describe_diff(changes)}): {fix}"
        )


# ---------------------------------------------------------------- locks
def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of a unit directory (or file): ``<parent>/.<name>.lock``."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


class LockHeld(UserError):
    """Another live process holds the lock (the message names its pid and host)."""


class Lock:
    """An exclusive, non-blocking lock on a unit; ``acquire()`` raises UserError when another live process
    holds it. Use :func:`locked` as a context manager."""

    def __init__(self, target: str | os.PathLike, what: str = "this directory"):
        self.target, self.what = Path(target), what
        self.path = lock_path(target)
        self._fd: int | None = None

    def _refuse(self, holder: dict) -> UserError:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f" since {holder['since']}" if holder.get("since") else ""
        return LockHeld(
            f"{self.target} is in use by another process ({who}{since}, lock {self.path}): wait for it to "
            f"finish, or stop it; if that process is gone, delete {self.path} and rerun"
        )

    def acquire(self) -> Lock:
        from lora_vs_full.storage import ensure_dir, fs_error

        ensure_dir(self.path.parent)
        for _ in range(5):  # retried only when the file was replaced under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise fs_error(exc, self.path, "create the lock file") from None
            if not self._flock(fd):
                os.close(fd)
                raise self._refuse(_read_holder(self.path))
            try:  # the file we locked must still be the one at the path (another releaser may unlink it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            self._write_holder()
            return self
        raise self._refuse(_read_holder(self.path))  # pragma: no cover - pathological churn

    def _flock(self, fd: int) -> bool:
        """True when this process now holds the lock; False when a live process does."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:  # no flock on this filesystem: fall back to the pid written in the file
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        holder = _read_holder(self.path)
        pid, host = holder.get("pid"), holder.get("host")
        if not pid or pid == os.getpid():
            return True
        if host == _host():
            return not _pid_alive(int(pid))  # a dead pid on this host: a stale lock, take it over
        return False  # another host: cannot tell; the message says how to remove it

    def _write_holder(self) -> None:
        holder = {"pid": os.getpid(), "host": _host(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        data = json.dumps(holder).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: no one can lock this inode and think it current
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def locked(target: str | os.PathLike, what: str = "this directory") -> Iterator[Lock]:
    """Hold the lock of ``target`` for the block (see :class:`Lock`)."""
    lock = Lock(target, what).acquire()
    try:
        yield lock
    finally:
        lock.release()


def locked_by(target: Callable, what: str):
    """Decorator: hold the lock of ``target(*args, **kwargs)`` (a directory, or None = no lock) for the call.

    Used by every command body whose output directory is one unit (``lvf-analyze``, ``lvf-pseudoloss``,
    ``lvf-intervene`` lock their ``out``; a continual run its run directory). When the lock file cannot
    even be created (an unwritable location) the body runs unlocked and reports the location itself."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            where = target(*args, **kwargs)
            if where is None:
                return fn(*args, **kwargs)
            lock = Lock(where, what)
            try:
                lock.acquire()
            except LockHeld:
                raise
            except UserError:  # cannot create the lock file: the body names the unwritable path
                return fn(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                lock.release()

        return inner

    return wrap


def cfg_out(cfg, *args, **kwargs):
    """``cfg.out`` as a Path (None when unset): the lock target of a command that writes one directory."""
    out = cfg.get("out") if hasattr(cfg, "get") else getattr(cfg, "out", None)
    return Path(str(out)) if out else None


# ---------------------------------------------------------------- parts (analysis, pseudo-loss, intervention)
def part_is_current(part: str | os.PathLike, source: dict, *, marker: str = "source.json",
                    outputs: tuple[str, ...] = ()) -> bool:  # fmt: skip
    """True when ``part`` is complete (its ``outputs`` and ``marker`` exist) and was made from ``source``.

    A part made from another source is stale (its input changed) and is recomputed by the caller:
    unlike a run, a part is a pure function of its source, so recomputing never discards work the user
    asked to keep. A corrupt marker counts as stale.
    """
    from lora_vs_full.storage import read_json

    part = Path(part)
    if not (part / marker).is_file() or not all((part / o).exists() for o in outputs):
        return False
    try:
        return read_json(part / marker) == source
    except UserError:
        return False


def json_part(path: str | os.PathLike, source: dict, compute: Callable[[], dict], *, log=None,
              name: str | None = None) -> dict:  # fmt: skip
    """A one-file part ``{"source": ..., **payload}`` (pseudo-loss rows, intervention measurements).

    Returns the stored payload when the file's ``source`` equals ``source`` (logging ``up to date,
    skipping: <name>``); otherwise ``compute()`` (a dict), written atomically with its source. A corrupt
    part counts as stale and is recomputed.
    """
    from lora_vs_full.storage import atomic_write_json, read_json

    path = Path(path)
    if path.is_file():
        try:
            stored = read_json(path)
        except UserError:
            stored = {}
        if isinstance(stored, dict) and stored.get("source") == source:
            if log is not None:
                log(f"up to date, skipping: {name or path.stem}")
            return {k: v for k, v in stored.items() if k != "source"}
    payload = compute()
    atomic_write_json(path, {"source": source, **payload})
    return payload


def begin_part(part: str | os.PathLike, *, marker: str = "source.json") -> Path:
    """Invalidate ``part`` before recomputing it (its marker goes first), and make sure it exists."""
    from lora_vs_full.storage import ensure_dir

    part = Path(part)
    (part / marker).unlink(missing_ok=True)
    return ensure_dir(part)


def finish_part(part: str | os.PathLike, source: dict, *, marker: str = "source.json") -> Path:
    """Mark ``part`` complete (written last, atomically)."""
    from lora_vs_full.storage import atomic_write_json

    return atomic_write_json(Path(part) / marker, source)
