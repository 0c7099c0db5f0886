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
    "scipy",
    "tokenizers",
    "omegaconf",
)

# Environment variables that change thread counts or kernel choices, hence low-order bits of results.
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG",
        "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES")  # fmt: skip


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
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_build"] = torch_build()
        info["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
            info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    info["numpy_blas"] = numpy_blas()
    info["env"] = {k: os.environ.get(k) for k in _ENV}
    return info


def torch_build() -> dict:
    """BLAS / LAPACK / parallel backend torch was built with (``torch.__config__``), e.g. ``{"BLAS_INFO": "mkl"}``."""
    import re

    import torch

    out = {}
    try:
        show = torch.__config__.show()
        for key in ("BLAS_INFO", "LAPACK_INFO", "TORCH_VERSION", "USE_CUDA", "USE_MKL", "USE_OPENMP"):
            m = re.search(rf"{key}=([^,\s]+)", show)
            out[key] = m.group(1) if m else None
        mkl = re.search(r"Math Kernel Library Version ([^\s]+)", show)
        out["mkl"] = mkl.group(1) if mkl else None
        backend = re.search(r"ATen parallel backend: (.+)", torch.__config__.parallel_info())
        out["parallel_backend"] = backend.group(1).strip() if backend else None
    except Exception:  # pragma: no cover - a torch build without __config__ details
        pass
    return out


def numpy_blas() -> str | None:
    """The BLAS numpy (hence scipy's callers, pandas) links, e.g. ``scipy-openblas 0.3.31``."""
    try:
        import numpy as np

        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # pragma: no cover - older numpy
        return None


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


# --- What was read: file hashes and resolved Hub revisions (issue 12) -------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(paths) -> list[dict]:
    """``[{"path", "bytes", "sha256"}]`` for local files that were read (in the given order)."""
    return [
        {"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": sha256_file(p)}
        for p in paths
    ]


def resolve_commit(repo_id: str, revision: str | None = None, *, repo_type: str = "model") -> str | None:
    """The commit a Hub ``revision`` points to (huggingface_hub; offline: from the local cache's refs/).

    None for a local directory, or when neither the Hub nor the cache can tell. A repo or revision that
    does not exist raises :class:`~lora_vs_full.errors.UserError` with the library's message.
    """
    if repo_id is None or Path(str(repo_id)).expanduser().exists():
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.constants import is_offline_mode

    try:
        resolved = HfApi().resolve_revision(
            str(repo_id), repo_type=repo_type, revision=revision, local_files_only=is_offline_mode()
        )
    except Exception as exc:  # noqa: BLE001 - classified below
        name = type(exc).__name__
        if name in ("RevisionNotFoundError", "RepositoryNotFoundError", "GatedRepoError"):
            from lora_vs_full.errors import UserError

            detail = (str(exc).strip().splitlines() or [name])[0][:200]
            raise UserError(
                f"cannot resolve {repo_type} {repo_id}@{revision or 'main'}: [{name}: {detail}]"
            ) from None
        return None  # unreachable and not cached: recorded as unknown
    return getattr(resolved, "resolved", None) or None


def model_record(source: str, requested: str | None) -> dict:
    """``{"source", "requested_revision", "commit", "files"}`` of a base model; a pinned sha must match.

    Hub ids: the commit the requested revision resolves to (a mismatch with a requested full sha is a
    UserError). Local directories (built or packaged models): the sha256 of their weight files.
    """
    import re

    from lora_vs_full.errors import UserError

    rec = {"source": str(source), "requested_revision": requested, "commit": None, "files": []}
    local = Path(str(source)).expanduser()
    if local.exists():
        rec["files"] = file_hashes(sorted(p for p in local.iterdir() if p.suffix in (".safetensors", ".bin")))
        return rec
    rec["commit"] = resolve_commit(str(source), requested)
    if requested and re.fullmatch(r"[0-9a-f]{40}", str(requested)) and rec["commit"] not in (None, requested):
        raise UserError(
            f"model {source}: revision {requested} was requested but it resolves to {rec['commit']}: "
            "clear the cache entry or fix model.revision"
        )
    return rec


def check_recorded_revision(recorded: str | None, requested: str | None, what: str) -> None:
    """A run recorded commit ``recorded``; loading it at another explicitly requested revision is an error."""
    from lora_vs_full.errors import UserError

    if recorded and requested and str(requested) != str(recorded):
        raise UserError(
            f"{what} was trained on commit {recorded} but revision {requested} was requested: drop the "
            "override (the recorded commit is used) or retrain"
        )
