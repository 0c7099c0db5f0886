"""The Hub data contract: each task read from a local folder laid out exactly like its Hub repo at the
registry's revision, through the same datasets code path (config and split inference included)."""

from __future__ import annotations

import dataclasses

import pytest

from lora_vs_full.data import get_task, load_task, load_task_with_record
from lora_vs_full.data import hub as hub_mod
from lora_vs_full.data.mirror import mirror_tasks, write_hub_mirror
from lora_vs_full.errors import UserError


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache(tmp_path_factory):
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("datasets-cache")
    yield
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return write_hub_mirror(tmp_path_factory.mktemp("hub"), rows=6)


@pytest.mark.parametrize("task", ["mnli", "qqp", "sst2", "siqa", "winogrande", "fever"])
def test_every_task_loads_from_its_hub_layout(mirror, task):
    spec = get_task(task)
    for split in ("train", "eval"):
        ds, rec = load_task_with_record(task, split, hub_root=str(mirror), check_rows=False)
        assert rec["source"] == "hub_mirror" and rec["hub_id"] == spec.hub_id
        assert rec["revision"] == spec.hub_revision and rec["files"], rec
        assert all(len(f["sha256"]) == 64 for f in rec["files"])
        hub_split = spec.train_split if split == "train" else spec.eval_split
        assert all(f"/{hub_split}" in f["path"] for f in rec["files"])  # the right split's file
        assert set(ds["label"]) == set(range(spec.num_labels))  # labels by name, all present
        assert ds.info.description == f"{spec.hub_id}/{spec.hub_config}@{spec.hub_revision}:{hub_split}"
    if task == "fever":  # one row per evidence sentence -> one per claim
        assert rec["raw_rows"] == 9 and rec["rows"] == 6
    if task == "siqa":  # "1\n" (a trailing newline, as in an old release) is label 0
        assert ds[0]["label"] == 0 and ds[0]["text"].startswith("Please choose the correct answer")


def test_old_winogrande_entry_fails_on_the_parquet_branch_and_the_new_one_works(tmp_path):
    # refs/convert/parquet has winogrande_xl/<split>/0000.parquet and no README: datasets >= 4 then knows
    # one config, "default". The registry's old entry (config winogrande_xl at that revision) must fail.
    write_hub_mirror(tmp_path, rows=4)
    branch = tmp_path / "allenai/winogrande/refs/convert/parquet"
    for split in ("train", "validation", "test"):
        src = tmp_path / f"allenai/winogrande/main/winogrande_xl/{split}-00000-of-00001.parquet"
        (branch / "winogrande_xl" / split).mkdir(parents=True)
        (branch / "winogrande_xl" / split / "0000.parquet").write_bytes(src.read_bytes())
    old = dataclasses.replace(get_task("winogrande"), hub_revision="refs/convert/parquet")
    with pytest.raises(UserError) as err:
        hub_mod.load_hub(old, "train", hub_root=tmp_path, check_rows=False)
    msg = str(err.value)
    assert "no such config at this revision" in msg and "Available: ['default']" in msg
    ds, where, rec = hub_mod.load_hub(get_task("winogrande"), "train", hub_root=tmp_path, check_rows=False)
    # 4 rows, not the 6 of the module's mirror: datasets keys a local builder's cache by config only, so
    # each mirror's files get their own cache (a shared one silently served the other mirror's rows)
    assert len(ds) == 4 and where == "allenai/winogrande/winogrande_xl@main:train"
    assert rec["files"][0]["path"].endswith("main/winogrande_xl/train-00000-of-00001.parquet")
    small, _, _ = hub_mod.load_hub(
        get_task("winogrande"), "train", winogrande_size="xs", hub_root=tmp_path, check_rows=False
    )
    assert len(small) == 4


def test_row_counts_are_checked_and_script_revisions_refused(mirror, tmp_path):
    with pytest.raises(UserError, match=r"6 rows, expected 872 .*task\.check_rows=false"):
        load_task("sst2", "eval", hub_root=str(mirror))
    with pytest.raises(UserError, match=r"6 unique claims, expected 9,999"):
        load_task("fever", "eval", hub_root=str(mirror))
    # a revision still holding the loading script is refused, as the Hub factory refuses it
    write_hub_mirror(tmp_path, rows=3)
    (tmp_path / "allenai/winogrande/main/winogrande.py").write_text("# loading script\n")
    with pytest.raises(UserError, match="holds a loading script"):
        load_task("winogrande", "eval", hub_root=str(tmp_path), check_rows=False)
    with pytest.raises(
        UserError, match=r"no mirror of allenai/social_i_qa at revision deadbeef.*hf download"
    ):
        load_task("siqa", "eval", hub_root=str(tmp_path), revision="deadbeef")


def test_fever_claim_with_two_labels_and_unknown_label_names_are_errors():
    import datasets

    spec = get_task("fever")
    bad = datasets.Dataset.from_dict({"id": [1, 1], "label": ["SUPPORTS", "REFUTES"], "claim": ["c", "c"]})
    with pytest.raises(UserError, match="claim id 1 has labels 'SUPPORTS' and 'REFUTES'"):
        hub_mod.convert(spec, bad, "f")
    feats = datasets.Features(
        {"id": datasets.Value("int64"), "claim": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["SUPPORTED", "REFUTED", "NEI"])}
    )  # fmt: skip
    renamed = datasets.Dataset.from_dict({"id": [1], "label": [0], "claim": ["c"]}, features=feats)
    with pytest.raises(UserError, match=r"label names .* not in the fever label map"):
        hub_mod.convert(spec, renamed, "f")


@pytest.mark.parametrize(
    "exc, cause",
    [
        (RuntimeError("Dataset scripts are no longer supported, but found fever.py"), "loading script"),
        (ValueError("BuilderConfig 'winogrande_xl' not found. Available: ['default']"), "no such config"),
        (ValueError("Unknown split \"paper_test\". Should be one of ['train']"), "no such split"),
        (ConnectionError("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"), "cannot be reached"),
        (FileNotFoundError("Dataset 'meta-llama/x' is a gated dataset on the Hub."), "gated"),
    ],
)
def test_hub_errors_keep_their_real_cause(exc, cause):
    msg = str(hub_mod.hub_error(exc, "repo/config@rev:split"))
    assert cause in msg and str(exc).splitlines()[0][:40] in msg and "offline?" not in msg


def test_mirror_serves_all_paper_tasks():
    assert mirror_tasks() == ["mnli", "qqp", "sst2", "siqa", "winogrande", "fever"]


def test_run_data_kwargs_reuse_the_runs_source_and_recorded_commit():
    from omegaconf import OmegaConf

    from lora_vs_full.data import run_data_kwargs

    run_cfg = OmegaConf.create({"task": {"name": "qqp", "hub_root": "/m", "allow_substitutes": True}})
    final = {"data_revisions": {"nyu-mll/glue": {"requested": "main", "commit": "a" * 40}}}
    assert run_data_kwargs(run_cfg, final) == {
        "data_dir": None, "hub_root": "/m", "revision": "a" * 40, "allow_substitutes": True, "check_rows": True,
    }  # fmt: skip
    assert run_data_kwargs(None)["allow_substitutes"] is False


def test_hub_path_reads_at_the_resolved_commit_and_records_it(monkeypatch, mirror):
    import datasets

    calls = {}
    real = datasets.load_dataset_builder

    def fake(path, name=None, **kwargs):  # the Hub, served from the mirror's files
        calls.update(path=path, name=name, **kwargs)
        return real(str(mirror / "allenai/winogrande/main"), name)

    monkeypatch.setattr(datasets, "load_dataset_builder", fake)
    monkeypatch.setattr("lora_vs_full.provenance.resolve_commit", lambda *a, **k: "c" * 40)
    monkeypatch.setattr(
        hub_mod, "_hub_file_records", lambda repo, commit, files: [{"path": f} for f in files]
    )
    ds, rec = load_task_with_record("winogrande", "eval", check_rows=False)
    assert calls == {"path": "allenai/winogrande", "name": "winogrande_xl", "revision": "c" * 40}
    assert rec["source"] == "hub" and rec["revision"] == "main" and rec["commit"] == "c" * 40 and len(ds) == 6


def test_a_pinned_revision_that_the_files_do_not_match_is_an_error(tmp_path):
    import time

    write_hub_mirror(tmp_path, rows=3)
    pinned, other = "a" * 40, "b" * 40
    repo = tmp_path / "allenai/social_i_qa" / pinned  # a mirror folder named by the pinned commit ...
    (tmp_path / "allenai/social_i_qa/refs/convert/parquet").rename(repo)
    for split in ("train", "validation"):  # ... whose hf-download metadata says another commit
        meta = repo / ".cache/huggingface/download/default" / split / "0000.parquet.metadata"
        meta.parent.mkdir(parents=True)
        meta.write_text(f"{other}\netag\n{time.time() + 60}\n")
    with pytest.raises(
        UserError, match=f"revision {pinned} was requested but the files read are from commit {other}"
    ):
        load_task("siqa", "eval", hub_root=str(tmp_path), revision=pinned, check_rows=False)


def test_a_pinned_model_revision_must_resolve_to_itself(monkeypatch):
    from lora_vs_full import provenance

    monkeypatch.setattr(provenance, "resolve_commit", lambda *a, **k: "b" * 40)
    with pytest.raises(UserError, match="revision a{40} was requested but it resolves to b{40}"):
        provenance.model_record("FacebookAI/roberta-base", "a" * 40)
    assert provenance.model_record("FacebookAI/roberta-base", "main")["commit"] == "b" * 40


def test_a_run_recorded_base_commit_cannot_be_overridden():
    from lora_vs_full.provenance import check_recorded_revision

    check_recorded_revision("a" * 40, None, "run x")  # nothing requested: the recorded commit is used
    check_recorded_revision("a" * 40, "a" * 40, "run x")
    with pytest.raises(UserError, match="run x was trained on commit a{40} but revision main was requested"):
        check_recorded_revision("a" * 40, "main", "run x")
