"""Turn what a user typed (a path, a Hub id, a lvf-train run directory) into weight sources.

Resolution order for a spec: an existing local path wins; a lvf-train run directory (``final.json`` or
``checkpoint/`` inside) means its ``checkpoint/``; a directory with ``adapter_config.json`` is a PEFT
adapter (merged onto the base); any other directory is a HF model. A spec that is not an existing path
but looks like ``org/name`` is fetched from the Hub (safetensors + json only).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lora_vs_full.errors import UserError
from lora_vs_full.weights.adapter import AdapterWeights, is_adapter_dir
from lora_vs_full.weights.source import HFWeights, WeightSource

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _download(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown id, gated repo, network: all user-fixable here
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot fetch {repo_id!r} (revision {revision or 'main'}) from the Hugging Face Hub ({first}); "
            "pass a local path, or set HF_HUB_OFFLINE=0 and check the id and your network"
        ) from None


def fetch(spec: str, revision: str | None = None) -> tuple[Path, str]:
    """Local directory for ``spec`` and a stable identity (``id@commit`` for Hub ids, '' for local)."""
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{spec} is a file; pass the model directory that contains it")
        return p, ""
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise UserError(f"no such directory: {spec}; pass an existing model directory or a Hub id")
    path = _download(spec, revision, ["*.safetensors", "*.json"])
    if not any(path.glob("*.safetensors")):
        # legacy repository without safetensors (tloen/alpaca-lora-7b: adapter_model.bin; chavinlo/alpaca-native:
        # pytorch_model-*.bin): its .bin files are loaded with torch.load(weights_only=True) only
        legacy = ["adapter_model.bin"] if (path / "adapter_config.json").is_file() else ["*.bin"]
        path = _download(spec, revision, [*legacy, "*.json"])
    commit = path.name if _COMMIT.match(path.name) else (revision or "main")
    return path, f"{spec}@{commit}"


def is_hub_spec(spec: str) -> bool:
    """True when ``spec`` names a Hub repo rather than an existing local path."""
    return (
        not Path(spec).expanduser().exists()
        and not spec.startswith((".", "/", "~"))
        and bool(_HUB_ID.match(spec))
    )


def hub_download_bytes(specs: list[tuple[str, str | None]]) -> int | None:
    """Bytes the Hub specs among ``specs`` would download (the files :func:`fetch` takes), from the Hub's
    file listing; 0 when all are local, None when unknown (offline, gated, network). Files already in the
    local HF cache are not counted (a rerun after a download must not be refused for the space the
    download itself took)."""
    import os

    hub = [(s, r) for s, r in specs if is_hub_spec(s)]
    if not hub:
        return 0
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        from huggingface_hub import HfApi

        api, total = HfApi(), 0
        for spec, rev in hub:
            info = api.model_info(spec, revision=rev, files_metadata=True)
            files, info_sha = info.siblings or [], info.sha
            st = [f for f in files if f.rfilename.endswith(".safetensors") and "/" not in f.rfilename]
            if not st:
                legacy = (
                    "adapter_model.bin"
                    if any(f.rfilename == "adapter_config.json" for f in files)
                    else ".bin"
                )
                st = [f for f in files if f.rfilename.endswith(legacy) and "/" not in f.rfilename]
            total += sum((f.size or 0) for f in st if not _cached(spec, f.rfilename, info_sha))
        return total
    except Exception:  # offline, gated, unknown id: the download itself will report it
        return None


def _cached(repo_id: str, filename: str, commit: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, revision=commit), str)


def remove_downloads(specs: list[str]) -> int:
    """Delete the local HF-cache revisions of the Hub repos among ``specs`` (``cleanup_downloads=true``);
    returns the bytes freed. huggingface_hub's own cache scan and delete strategy, nothing hand-rolled."""
    from huggingface_hub import scan_cache_dir

    ids = {s for s in specs if is_hub_spec(s)}
    if not ids:
        return 0
    info = scan_cache_dir()
    revs = [r.commit_hash for repo in info.repos if repo.repo_id in ids for r in repo.revisions]
    if not revs:
        return 0
    strategy = info.delete_revisions(*revs)
    strategy.execute()
    return strategy.expected_freed_size


def resolve_dir(p: Path) -> Path:
    """A lvf-train run directory -> its final ``checkpoint/``; anything else unchanged."""
    if (p / "final.json").is_file() or ((p / "checkpoint").is_dir() and not (p / "config.json").exists()):
        ckpt = p / "checkpoint"
        if not ckpt.is_dir():
            raise UserError(
                f"run directory {p} has no checkpoint/; was it trained with checkpoint saving off?"
            )
        return ckpt
    return p


def open_model(spec: str | Path, revision: str | None = None) -> HFWeights:
    """A full model (base or full fine-tune) from a directory, run directory or Hub id."""
    path, hub_identity = fetch(str(spec), revision)
    path = resolve_dir(path)
    if is_adapter_dir(path):
        raise UserError(
            f"{path} is a LoRA adapter, not a full model; pass it as the tuned side with a base model"
        )
    return HFWeights(path, identity=hub_identity or None, location=str(spec))


def open_tuned(base_src: WeightSource, tuned: str | Path, revision: str | None = None) -> WeightSource:
    """The tuned side for an already opened base: a full model, or a LoRA adapter merged onto ``base_src``.

    A different architecture (model_type) or an adapter whose A/B shapes do not fit the base is refused.
    An adapter trained from a differently named base only warns: paths legitimately differ between
    machines, and the shape check catches real mismatches.
    """
    tuned_path, hub_identity = fetch(str(tuned), revision)
    tuned_path = resolve_dir(tuned_path)
    from lora_vs_full.weights.peft_merge import PeftMergedWeights, peft_variant

    if is_adapter_dir(tuned_path) and peft_variant(tuned_path):  # DoRA, PiSSA, ...: PEFT merges in memory
        tuned_src = PeftMergedWeights(base_src, tuned_path)
        tuned_src.location = str(tuned)
    elif is_adapter_dir(tuned_path):
        tuned_src: WeightSource = AdapterWeights(base_src, tuned_path)
        tuned_src.location = str(tuned)
        if hub_identity:
            tuned_src.identity = f"{hub_identity}+on:{base_src.identity}"
        tuned_src.check_shapes()
        claimed = tuned_src.config.get("base_model_name_or_path")
        base = base_src.location
        if claimed and str(claimed) != base and Path(str(claimed)) != Path(base):
            log.warning(
                "adapter %s was trained on %s but is merged onto %s (shapes match)", tuned, claimed, base
            )
    else:
        tuned_src = HFWeights(tuned_path, identity=hub_identity or None, location=str(tuned))
    if tuned_src.model_type != base_src.model_type:
        raise UserError(
            f"different architectures: base {base_src.location} is {base_src.model_type!r}, tuned {tuned} is "
            f"{tuned_src.model_type!r}; pass the base model the fine-tune started from"
        )
    return tuned_src


def open_pair(
    base: str | Path,
    tuned: str | Path,
    *,
    base_revision: str | None = None,
    tuned_revision: str | None = None,
) -> tuple[WeightSource, WeightSource]:
    """``(base_src, tuned_src)``; the tuned side may be a full model or a LoRA adapter (see :func:`open_tuned`)."""
    base_src = open_model(base, base_revision)
    return base_src, open_tuned(base_src, tuned, tuned_revision)
