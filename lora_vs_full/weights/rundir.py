"""Finished lvf-train run directories as analysis inputs (contract: docs/ARCHITECTURE.md, "Run directory").

A run is complete when ``final.json`` exists (it is written last and atomically). Each complete run yields
one :class:`RunCheckpoint` for ``checkpoint/`` and, on request, one per ``checkpoints/step-<n>/``.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lora_vs_full.errors import UserError
from lora_vs_full.records import RUN_COLUMNS, file_safe
from lora_vs_full.storage import read_json

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a finished run: what to analyse and the run columns of its rows."""

    run_dir: Path
    checkpoint: Path
    base: str
    base_revision: str | None
    meta: dict  # the RUN_COLUMNS values
    final_sha256: str  # of final.json: a rerun re-analyses only when it changed

    @property
    def part_name(self) -> str:
        """File-safe, unique per (run, step): the folder of this checkpoint's per-run results."""
        is_final = self.checkpoint.name == "checkpoint"
        return file_safe(self.meta["run"] if is_final else f"{self.meta['run']}@step-{self.meta['step']}")


def run_meta_from_final(final: dict, *, step: int | None) -> dict:
    """RUN_COLUMNS from a final.json; missing keys become None."""
    meta = {c: final.get(c) for c in RUN_COLUMNS}
    meta["run"] = final.get("run_id")
    meta["step"] = step
    return meta


def find_runs(pattern: str, *, steps: bool = False) -> list[RunCheckpoint]:
    """Every complete run directory matching the glob ``pattern`` (recursive ``**`` allowed).

    Incomplete directories (no final.json) are skipped with a one-line note; a glob matching nothing at
    all is a UserError (almost always a typo).
    """
    matches = sorted(Path(p) for p in _glob.glob(str(Path(pattern).expanduser()), recursive=True))
    dirs = [p for p in matches if p.is_dir()]
    if not dirs:
        raise UserError(f"runs={pattern!r} matches no directory; check the glob (quote it in the shell)")
    out = []
    for d in dirs:
        final_path = d / "final.json"
        if not final_path.is_file():
            log.info("skipping %s: no final.json (run incomplete or still training)", d)
            continue
        raw = final_path.read_bytes()
        final = read_json(final_path)
        if not final.get("base_model") or not final.get("run_id"):
            raise UserError(f"{final_path} lacks base_model or run_id; it was not written by lvf-train")
        sha = hashlib.sha256(raw).hexdigest()
        common = dict(run_dir=d, base=str(final["base_model"]), base_revision=final.get("base_revision"))
        ckpt = d / "checkpoint"
        if not ckpt.is_dir():
            raise UserError(f"run {d} has final.json but no checkpoint/; the run directory is damaged")
        out.append(
            RunCheckpoint(
                checkpoint=ckpt,
                meta=run_meta_from_final(final, step=None),  # step NA = the final checkpoint (records.py)
                final_sha256=sha,
                **common,
            )
        )
        if steps:
            for sd in sorted((d / "checkpoints").glob("step-*")):
                m = _STEP_DIR.match(sd.name)
                if m and sd.is_dir():
                    meta = run_meta_from_final(final, step=int(m[1]))
                    out.append(RunCheckpoint(checkpoint=sd, meta=meta, final_sha256=sha, **common))
    return out
