"""What produced an artefact: git state, package versions, device, time. Stored beside every result."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import os
import platform
import subprocess
import sys
from pathlib import Path

_PACKAGES = (
    "lora-vs-full",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "hydra-core",
    "safetensors",
    "numpy",
    "pandas",
)


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def git_state(cwd: str | os.PathLike | None = None) -> dict:
    """``{"sha": ..., "dirty": bool}`` for the repository containing this package (or ``cwd``)."""
    root = Path(cwd) if cwd else Path(__file__).resolve().parent.parent
    sha = _git("rev-parse", "HEAD", cwd=root)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def collect(**extra) -> dict:
    """Provenance record; ``extra`` (inputs, dataset revisions, timings) is merged in verbatim."""
    return {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(),
        "argv": list(sys.argv),
        **extra,
    }
