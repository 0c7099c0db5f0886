"""Loading the six paper tasks from script-free Hub repos (PAPER.md §11, §13), at pinned, recorded revisions.

Two places hold a repo's files, read through the SAME ``datasets`` code path:

- the Hub: ``datasets.load_dataset_builder(id, config, revision=<resolved commit>)``;
- a local mirror ``<hub_root>/<id>/<revision>/``: the repo's files at that revision, exactly as on the Hub
  (``hf download <id> --repo-type dataset --revision <rev> --local-dir <hub_root>/<id>/<rev>``). datasets'
  local factory infers configs and splits as its Hub factory does (the README's ``configs:``; without one a
  single config "default" whose splits come from file and folder names), and a loading script in the repo
  is refused as on the Hub, so a config or revision mistake fails on the mirror exactly as on the Hub
  (tests/test_hub_layouts.py).

Labels are mapped by NAME, never by integer position: a ``ClassLabel`` column is turned into its names
first, then every name goes through :data:`formatting.LABEL_ALIASES` (mirrors disagree on label order).
FEVER mirrors have one row per evidence sentence, so rows are deduplicated by claim ``id`` (a claim with
two labels is an error). Row counts are checked against the registry (an unexpected count is an error).
Errors from ``datasets`` / ``huggingface_hub`` keep their real cause (offline, gated, missing config or
split, script repo refused, unknown revision) and the library's own message.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import datasets

from lora_vs_full.data.formatting import LABEL_ALIASES, map_label, siqa_text, winogrande_text
from lora_vs_full.data.registry import WINOGRANDE_SIZES, TaskSpec
from lora_vs_full.errors import UserError

log = logging.getLogger(__name__)

# Source columns per task: (text, text_pair or None, label).
_COLUMNS = {
    "mnli": ("premise", "hypothesis", "label"),
    "qqp": ("question1", "question2", "label"),
    "sst2": ("sentence", None, "label"),
    "siqa": (("context", "question", "answerA", "answerB", "answerC"), None, "label"),
    "winogrande": (("sentence", "option1", "option2"), None, "answer"),
    "fever": ("claim", None, "label"),
}
_SHA = re.compile(r"^[0-9a-f]{40}$")


def is_commit(revision: str | None) -> bool:
    """True for a full 40-hex commit sha (an immutable revision)."""
    return bool(revision) and bool(_SHA.match(str(revision)))


def file_record(path: str | os.PathLike) -> dict:
    """``{"path", "bytes", "sha256"}`` of a local file that was read."""
    from lora_vs_full.provenance import file_hashes

    return file_hashes([path])[0]


def hub_source(
    spec: TaskSpec, split: str, winogrande_size: str | None = None, revision: str | None = None
) -> dict:
    """``{"id", "config", "revision", "split"}`` that :func:`load_hub` reads; ``revision`` overrides the registry."""
    config = spec.hub_config
    if spec.name == "winogrande" and winogrande_size is not None:
        if winogrande_size not in WINOGRANDE_SIZES:
            raise UserError(
                f"winogrande size={winogrande_size!r} is not one of {', '.join(WINOGRANDE_SIZES)}"
            )
        config = f"winogrande_{winogrande_size}"
    hub_split = spec.train_split if split == "train" else spec.eval_split
    return {
        "id": spec.hub_id,
        "config": config,
        "revision": revision or spec.hub_revision,
        "split": hub_split,
    }


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_error(exc: BaseException, what: str) -> UserError:
    """A UserError naming the real cause of a datasets / huggingface_hub failure, with its own message."""
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if "Dataset scripts are no longer supported" in text:
        cause = (
            "the repo holds a loading script at this revision, which datasets >= 4 refuses; use a "
            "script-free revision (a parquet commit, or refs/convert/parquet with its own config names)"
        )
    elif "GatedRepoError" in names or "gated" in text.lower():
        cause = (
            "the repo is gated: accept its terms on the Hub page, then log in (hf auth login) or set "
            "HF_TOKEN to a token with access"
        )
    elif "BuilderConfig" in text and "not found" in text:
        cause = "no such config at this revision (the configs a revision knows come from its README)"
    elif "Unknown split" in text:
        cause = "no such split in this config at this revision"
    elif "RevisionNotFoundError" in names or re.search(r"Revision '.*' doesn't exist", text):
        cause = "no such revision in the repo"
    elif (
        names & {"OfflineModeIsEnabled"}
        or "offline" in text.lower()
        or names
        & {
            "ConnectError",
            "ConnectionError",
            "ConnectTimeout",
            "TimeoutException",
        }
    ):
        cause = (
            "the Hub cannot be reached (HF_HUB_OFFLINE=1 or no network); pass task.hub_root=<local mirror> "
            "or task.data_dir=<original release files>, or run where the Hub is reachable"
        )
    elif names & {"RepositoryNotFoundError", "DatasetNotFoundError"}:
        cause = "no such repo on the Hub, or it is private to others (check the id, log in)"
    elif names & {"DataFilesNotFoundError", "EmptyDatasetError"}:
        cause = "no data files for this config at this revision"
    else:
        cause = type(exc).__name__
    return UserError(f"could not load {what}: {cause} [{type(exc).__name__}: {detail}]")


def resolve_dataset_revision(repo_id: str, revision: str | None) -> str | None:
    """The commit ``revision`` of dataset ``repo_id`` points to (huggingface_hub; offline: its cache's refs/).

    A full sha resolves to itself; None when neither the Hub nor the cache can tell (the load then reports
    the real cause). An unknown repo or revision is a UserError with the library's message.
    """
    if is_commit(revision):
        return revision
    from lora_vs_full.provenance import resolve_commit

    return resolve_commit(repo_id, revision, repo_type="dataset")


def mirror_dir(hub_root: str | os.PathLike, repo_id: str, revision: str | None) -> Path:
    """``<hub_root>/<repo id>/<revision>``; UserError saying how to make it when absent."""
    rev = revision or "main"
    path = Path(hub_root).expanduser() / repo_id / rev
    if not path.is_dir():
        raise UserError(
            f"task.hub_root={str(hub_root)!r} has no mirror of {repo_id} at revision {rev}: expected {path} "
            f"(hf download {repo_id} --repo-type dataset --revision {rev} --local-dir {path})"
        )
    script = path / f"{repo_id.split('/')[-1]}.py"
    if script.is_file():  # the Hub factory refuses this revision; so does the mirror
        raise UserError(
            f"could not load {repo_id}@{rev}: the repo holds a loading script at this revision, which "
            f"datasets >= 4 refuses [RuntimeError: Dataset scripts are no longer supported, but found {script.name}]"
        )
    return path


def _mirror_cache(data_files) -> str:
    """A datasets cache folder unique to these files (path, size, mtime) of a local mirror."""
    import hashlib

    files = sorted({str(f) for fs in (data_files or {}).values() for f in fs})
    key = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return os.path.join(datasets.config.HF_DATASETS_CACHE, "lvf-hub-mirror", key.hexdigest()[:20])


def _mirror_commit(path: Path, files: list[str]) -> str | None:
    """The commit ``hf download --local-dir`` recorded for the mirror's files (None when absent/mixed)."""
    try:
        from huggingface_hub._local_folder import read_download_metadata
    except ImportError:  # pragma: no cover - private module moved
        return None
    commits = set()
    for f in files:
        rel = Path(f).resolve().relative_to(path.resolve()).as_posix()
        meta = read_download_metadata(path, rel)
        commits.add(meta.commit_hash if meta else None)
    return commits.pop() if len(commits) == 1 else None


def _hub_file_records(repo_id: str, commit: str | None, files: list[str]) -> list[dict]:
    """``hf://`` data files -> ``{"path", "bytes", "sha256"}`` from the repo's LFS metadata at ``commit``."""
    prefix = re.compile(r"^hf://datasets/[^@]+@[^/]+/")
    rel = [prefix.sub("", f) for f in files]
    out = [{"path": f, "bytes": None, "sha256": None} for f in files]
    if commit is None:
        return out
    try:
        from huggingface_hub import HfApi

        info = {p.path: p for p in HfApi().get_paths_info(repo_id, rel, revision=commit, repo_type="dataset")}
    except Exception as exc:  # noqa: BLE001 - the load itself succeeded; hashes are best effort
        log.warning("%s@%s: file hashes unavailable (%s)", repo_id, commit, type(exc).__name__)
        return out
    for rec, r in zip(out, rel, strict=True):
        p = info.get(r)
        if p is not None:
            rec["bytes"] = getattr(p, "size", None)
            lfs = getattr(p, "lfs", None)
            rec["sha256"] = getattr(lfs, "sha256", None) if lfs is not None else None
            rec["git_blob"] = getattr(p, "blob_id", None)
    return out


def _build(spec: TaskSpec, src: dict, hub_root: str | os.PathLike | None) -> tuple[datasets.Dataset, dict]:
    """Read ``src`` through datasets' builder (as ``load_dataset`` does); ``(raw dataset, record)``."""
    where = f"{src['id']}/{src['config']}@{src['revision']}:{src['split']}"
    record = {"source": "hub", "hub_id": src["id"], "config": src["config"], "split": src["split"]}
    record["revision"] = src["revision"]
    if hub_root is not None:
        path = mirror_dir(hub_root, src["id"], src["revision"])
        record.update(source="hub_mirror", mirror=str(path.resolve()))
        kwargs = {}
    else:
        commit = resolve_dataset_revision(src["id"], src["revision"])
        record["commit"] = commit
        path = src["id"]
        kwargs = {"revision": commit or src["revision"]}
    try:
        builder = datasets.load_dataset_builder(str(path), src["config"], **kwargs)
        if hub_root is not None:  # datasets keys a local builder's cache by config, not by file: two
            # mirrors would share (and silently reuse) one cache, so each set of files gets its own
            builder = datasets.load_dataset_builder(
                str(path), src["config"], cache_dir=_mirror_cache(builder.config.data_files)
            )
        data_files = builder.config.data_files
        if data_files is not None and src["split"] not in data_files:
            raise UserError(
                f"could not load {where}: no such split in this config at this revision (it has "
                f"{', '.join(sorted(data_files))}); check the registry's train/eval split names"
            )
        builder.download_and_prepare()
        ds = builder.as_dataset(split=src["split"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified by hub_error, never re-labelled
        raise hub_error(exc, where) from exc
    files = [str(f) for f in (data_files[src["split"]] if data_files is not None else [])]
    if hub_root is not None:
        record["files"] = [file_record(f) for f in files]
        record["commit"] = _mirror_commit(path, files)
    else:
        record["files"] = _hub_file_records(src["id"], record["commit"], files)
    if is_commit(src["revision"]) and record["commit"] not in (None, src["revision"]):
        raise UserError(
            f"{where}: revision {src['revision']} was requested but the files read are from commit "
            f"{record['commit']}: refresh the mirror or drop the pin"
        )
    return ds, record


def _label_names(ds: datasets.Dataset, column: str) -> list[str]:
    """The label column as strings: ClassLabel ids -> their names, anything else -> str()."""
    feature = ds.features[column]
    values = ds[column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(v) if v >= 0 else str(v) for v in values]  # -1 = unlabelled test rows
    return [str(v) for v in values]


def _dedupe_claims(ds: datasets.Dataset, label_col: str, where: str) -> datasets.Dataset:
    """One row per claim id (the first); a claim id carrying two different labels is an error."""
    labels = _label_names(ds, label_col)
    first: dict = {}
    keep = []
    for i, (claim_id, label) in enumerate(zip(ds["id"], labels, strict=True)):
        if claim_id not in first:
            first[claim_id] = label
            keep.append(i)
        elif first[claim_id] != label:
            raise UserError(
                f"{where}: claim id {claim_id} has labels {first[claim_id]!r} and {label!r}; "
                "this is not FEVER 1.0 (one label per claim)"
            )
    log.info("%s: %d rows -> %d unique claim ids", where, len(ds), len(keep))
    return ds.select(keep)


def convert(spec: TaskSpec, ds: datasets.Dataset, where: str) -> datasets.Dataset:
    """Hub rows -> ``text`` / ``text_pair`` / ``label``; UserError naming ``where`` on unexpected columns."""
    text_cols, pair_col, label_col = _COLUMNS[spec.name]
    needed = (text_cols if isinstance(text_cols, tuple) else (text_cols,)) + ((pair_col,) if pair_col else ())
    needed += (label_col,) + (("id",) if spec.name == "fever" else ())
    absent = [c for c in needed if c not in ds.column_names]
    if absent:
        raise UserError(
            f"{where}: expected columns {list(needed)}, found {ds.column_names} (missing {absent})"
        )
    feature = ds.features[label_col]
    if isinstance(feature, datasets.ClassLabel):  # the label map is asserted by name, not position
        unknown = [n for n in feature.names if n not in LABEL_ALIASES[spec.name]]
        if unknown:
            raise UserError(
                f"{where}: label names {feature.names} include {unknown}, not in the {spec.name} label map "
                f"{sorted(LABEL_ALIASES[spec.name])}"
            )
    if spec.name == "fever":
        ds = _dedupe_claims(ds, label_col, where)
    if spec.name == "siqa":
        text = [siqa_text(*row) for row in zip(*(ds[c] for c in text_cols), strict=True)]
    elif spec.name == "winogrande":
        text = [winogrande_text(*row) for row in zip(*(ds[c] for c in text_cols), strict=True)]
    else:  # SST-2 sentences end in a space in GLUE; stripped as in local.py so both sources agree
        text = [t.strip() for t in ds[text_cols]] if spec.name == "sst2" else ds[text_cols]
    columns = {"text": text}
    if pair_col:
        columns["text_pair"] = ds[pair_col]
    columns["label"] = [map_label(spec.name, name, where) for name in _label_names(ds, label_col)]
    return datasets.Dataset.from_dict(columns)


def load_hub(
    spec: TaskSpec,
    split: str,
    *,
    winogrande_size: str | None = None,
    revision: str | None = None,
    hub_root: str | os.PathLike | None = None,
    check_rows: bool = True,
) -> tuple[datasets.Dataset, str, dict]:
    """``(dataset, origin, record)`` for a paper task from the Hub or a local mirror of it.

    ``origin`` = ``id/config@revision:split``; ``record`` (for run provenance) names the source, the
    requested revision and the commit it resolved to, and every data file read with its sha256.
    ``check_rows``: the converted row count must equal the registry's (UserError otherwise).
    """
    src = hub_source(spec, split, winogrande_size, revision)
    where = f"{src['id']}/{src['config']}@{src['revision']}:{src['split']}"
    raw, record = _build(spec, src, hub_root)
    ds = convert(spec, raw, where)
    expected = spec.rows_expected(src["split"], src["config"])
    record.update(raw_rows=len(raw), rows=len(ds), expected_rows=expected)
    if check_rows and expected is not None and len(ds) != expected:
        what = "unique claims" if spec.name == "fever" else "rows"
        raise UserError(
            f"{where}: {len(ds):,} {what}, expected {expected:,} (the official release); a partial or "
            "different mirror would change the task: fix the source, or pass task.check_rows=false to accept it"
        )
    return ds, where, record
