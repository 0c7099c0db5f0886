"""Shared plumbing for the console scripts: config location, the one-line error contract, and sweeps that
outlive one failing job.

Single run: a :class:`UserError` is printed as ``error: <message>`` on stderr with exit status 2. So is a
command line Hydra cannot compose (a value of the wrong type, an unknown key or preset, an override that
does not parse): :func:`compose_error_line` turns Hydra's multi-line report into one line naming the value
and the fix (installed for every ``lvf-*`` command when this module is imported).

Multirun (``-m``): every job runs even when another fails. A job's failure (a user error or a bug) is
recorded in ``<job dir>/lvf_job.json`` (status, error line, overrides, log path; a bug's traceback goes to
the job's log), and :class:`SweepSummary` (a Hydra callback listed in the command's yaml) prints at the
end ``sweep: <n> done, <n> skipped, <n> failed`` with each failing job's overrides, error and log, and
exits non-zero when any job failed (2 when every failure was a user error, else 1).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from lora_vs_full.errors import UserError

JOB_FILE = "lvf_job.json"
_status: dict = {}


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


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0].strip() if str(text).strip() else ""


def compose_error_line(ex: BaseException) -> str | None:
    """One line for an exception Hydra raises while composing the command line; None for anything else."""
    import re

    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("lvf-command")
    prog = f"lvf-{argv0.stem}" if argv0.parent.name == "cli" else argv0.name  # python -m lora_vs_full.cli.x
    if not prog.startswith("lvf-"):
        prog = "the command"
    listing = f"`{prog} --cfg job` prints the composed config and its keys"
    if isinstance(ex, MissingConfigException):
        text = str(ex)
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        if m and options:
            names = ", ".join(o.strip() for o in options.group(1).splitlines() if o.strip())
            return f"{m.group(1)}={m.group(2)} is not a known {m.group(1)}: choose one of {names}"
        return f"{_first_line(text)}: check the name ({listing})"
    if isinstance(ex, OverrideParseException):
        bad = re.search(r"at input '([^']*)'", str(ex))
        return (
            f"cannot parse the override{f' near {bad.group(1)!r}' if bad else ''} ({_first_line(ex)}): write "
            "key=value, lists as key=[a,b], and quote values with spaces or brackets"
        )
    if isinstance(ex, ConfigCompositionException):
        cause = ex.__cause__
        key = re.search(r"full_key: (\S+)", str(cause)) if cause is not None else None
        override = re.search(r"Error merging override (\S+)", str(ex))
        what = override.group(1) if override else (key.group(1) if key else None)
        reason = _first_line(cause) if cause is not None else _first_line(ex)
        if cause is not None and type(cause).__name__ == "ConfigAttributeError":
            return f"unknown key {key.group(1) if key else what!r} ({reason}): check its spelling ({listing})"
        if "could not be converted" in reason or "Value '" in reason:
            return f"{what}: {reason}: give a value of the key's type ({listing})"
        return f"{what + ': ' if what else ''}{reason} ({listing})"
    return None


def _fs_line(ex: BaseException) -> str | None:
    """One line for a filesystem refusal (read-only or missing location, a file in the way, a full disk)
    that escaped a command, e.g. Hydra creating its run directory under an unwritable paths.results_dir."""
    if not isinstance(ex, OSError):
        return None
    from lora_vs_full.storage import fs_error

    err = fs_error(ex, ex.filename or "the output location")
    return None if err is ex else str(err)


def _install_compose_errors() -> None:
    """Make Hydra's composition errors one ``error:`` line with exit status 2 (HYDRA_FULL_ERROR=1 keeps
    Hydra's full report). Wraps ``hydra._internal.utils.run_and_report``, which ``hydra.main`` calls."""
    try:
        import hydra._internal.utils as hutils
    except ImportError:  # pragma: no cover - hydra is a hard dependency
        return
    original = hutils.run_and_report
    if getattr(original, "_lvf", False):
        return

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except Exception as ex:
                line = (
                    None
                    if os.environ.get("HYDRA_FULL_ERROR") == "1"
                    else compose_error_line(ex) or _fs_line(ex)
                )
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                sys.exit(2)

        return original(guarded)

    run_and_report._lvf = True
    hutils.run_and_report = run_and_report


_install_compose_errors()


def _hydra_job() -> dict | None:
    """``{"dir", "log", "overrides"}`` of the current Hydra multirun job; None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under @hydra.main (tests call the bodies directly)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    out = Path(hc.runtime.output_dir)
    return {"dir": out, "log": str(out / f"{hc.job.name}.log"), "overrides": list(hc.overrides.task)}


def set_job_status(status: str) -> None:
    """Let a command body say how its job ended when it did not fail: ``done`` (default) or ``skipped``."""
    _status["status"] = status


def _record(job: dict, status: str, error: str | None = None, user_error: bool = False) -> None:
    from lora_vs_full.storage import atomic_write_json

    record = {"status": status, "overrides": job["overrides"], "log": job["log"], "error": error,
              "user_error": user_error}  # fmt: skip
    try:
        atomic_write_json(job["dir"] / JOB_FILE, record)
    except (OSError, UserError):  # the summary then counts the job as unfinished
        pass


def _as_user_error(exc: BaseException) -> UserError | None:
    """``exc`` itself when it is a UserError; a filesystem refusal (unwritable, full disk) as one; else None."""
    if isinstance(exc, UserError):
        return exc
    line = _fs_line(exc)
    return UserError(line) if line else None


def user_errors_exit(fn):
    """Single run: :class:`UserError` -> ``error: <message>`` on stderr, exit 2 (no traceback).

    Multirun job: any failure is recorded for :class:`SweepSummary` and the sweep goes on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        job = _hydra_job()
        _status.clear()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            user = _as_user_error(exc)
            if user is not None:
                if job is None:
                    print(f"error: {user}", file=sys.stderr)
                    sys.exit(2)
                logging.getLogger("lvf").error("error: %s", user)  # console and the job's log
                _record(job, "failed", f"error: {user}", user_error=True)
                return None
            if job is None:
                raise
            logging.getLogger("lvf").exception("job failed")  # the traceback goes to the job's log
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"error: {line} (traceback in {job['log']})", file=sys.stderr)
            _record(job, "failed", line)
            return None
        if job is not None:
            _record(job, _status.get("status", "done"))
        return value

    return wrapper


def sweep_records(sweep_dir) -> list[dict]:
    """One record per job directory of a sweep (``num`` order); a job without a record is ``unfinished``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    records = []
    for job_dir in sweep_dir.iterdir():
        if not (job_dir / ".hydra").is_dir() and not (job_dir / JOB_FILE).is_file():
            continue
        try:
            rec = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            overrides = []
            ov = job_dir / ".hydra" / "overrides.yaml"
            if ov.is_file():
                from omegaconf import OmegaConf

                overrides = list(OmegaConf.load(ov))
            rec = {"status": "unfinished", "overrides": overrides, "log": None,
                   "error": "no record: the job was killed or crashed before it ended"}  # fmt: skip
        rec["job"] = job_dir.name
        records.append(rec)
    return sorted(
        records, key=lambda r: (not r["job"].isdigit(), int(r["job"]) if r["job"].isdigit() else 0, r["job"])
    )


def summarize(records: list[dict]) -> tuple[str, int]:
    """(summary text, exit status) of a sweep's job records."""
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed", "unfinished")}
    head = f"sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    if counts["unfinished"]:
        head += f", {counts['unfinished']} unfinished"
    lines = [head]
    bad = [r for r in records if r["status"] in ("failed", "unfinished")]
    for r in bad:
        where = f" (log: {r['log']})" if r.get("log") else ""
        lines.append(f"  {r['status']} job {r['job']}: {' '.join(r['overrides'])}: {r['error']}{where}")
    if not bad:
        return "\n".join(lines), 0
    return "\n".join(lines), 2 if all(r.get("user_error") for r in bad) else 1


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print the jobs' summary; exit non-zero when any failed."""

    def on_multirun_end(self, config, **kwargs) -> None:
        records = sweep_records(config.hydra.sweep.dir)
        if not records:
            return
        text, status = summarize(records)
        print(text, file=sys.stderr if status else sys.stdout, flush=True)
        if status:
            sys.exit(status)
