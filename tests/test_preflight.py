"""PRESET=paper's code path offline: a tiny RoBERTa trained on every paper task read from a local folder
laid out exactly like its Hub repo at the registry's revision (lora_vs_full.data.mirror), then analysed,
scored by the pseudo-loss and carried through a continual sequence; and lvf-preflight's plan and checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lora_vs_full.data.mirror import write_hub_mirror
from lora_vs_full.errors import UserError

TASKS = ["mnli", "qqp", "sst2", "siqa", "winogrande", "fever"]


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory):
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("datasets-cache")
    yield
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, datasets_cache):
    return write_hub_mirror(tmp_path_factory.mktemp("hub"), rows=8)


def _train_overrides(tiny: Path, mirror: Path, runs: Path, task: str) -> list[str]:
    return [
        "experiment=paper_roberta",  # the paper preset's own recipe file, with the tiny model swapped in
        "model=tiny", f"model.source={tiny}", f"task={task}", f"task.hub_root={mirror}", "task.check_rows=false",
        "method=lora", "method.rank=2", "optim.max_steps=1", "optim.batch_size=4", "optim.max_length=32",
        "optim.eval_batch_size=8", f"paths.runs_dir={runs}", "device=cpu", "save_state_every=null",
    ]  # fmt: skip


def test_paper_pipeline_on_hub_layouts(tiny_model_dir, mirror, tmp_path):
    from lora_vs_full.cli.analyze import run as analyze
    from lora_vs_full.cli.pseudoloss import score
    from lora_vs_full.config import compose_train
    from lora_vs_full.continual import compose_continual, run_continual
    from lora_vs_full.reproduce.common import compose_command
    from lora_vs_full.runs import execute, run_dir_for

    runs = tmp_path / "runs"
    dirs = []
    for task in TASKS:  # train: every task through the Hub-layout mirror, the training code path
        cfg = compose_train(_train_overrides(tiny_model_dir, mirror, runs, task))
        final = execute(cfg, log=lambda _m: None, progress=False)
        d = run_dir_for(cfg)
        dirs.append(d)
        assert final["substitutions"] == [] and final["task"] == task
        prov = json.loads((d / "provenance.json").read_text())
        for split in ("train", "eval"):
            rec = prov["data"][split]
            assert (
                rec["source"] == "hub_mirror"
                and rec["files"]
                and all(len(f["sha256"]) == 64 for f in rec["files"])
            )
        assert prov["base_model"]["files"]  # the built base's weight file, hashed
    # analyse (runs mode, as the reproductions call it) the WinoGrande and FEVER runs (~1 s per run)
    out = tmp_path / "analysis"
    glob = f"{runs}/tiny/[wf]*/*/seed*"  # winogrande, fever
    analyze(compose_command("analyze", [f"runs='{glob}'", f"out={out}", "progress=false"]))
    table = pd.read_parquet(out / "intruders.parquet")
    assert set(table["task"]) == {"winogrande", "fever"}
    # figures: Fig. 5 drawn from that analysis by the drawing module
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import fig5

    drawn = fig5.make_fig5(out, tmp_path / "figures")
    assert any(Path(p).name == "fig5.png" for p in drawn)
    # pseudo-loss of one run (the base is the run's recorded base)
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(8)))
    pl = score(compose_command("pseudoloss", [f"runs={dirs[4]}", f"text_file={text}", f"out={tmp_path / 'pl'}",
                                              "corpus.n_texts=2", "scoring.max_length=24",
                                              f"paths.results_dir={tmp_path / 'res'}", "progress=false"]))  # fmt: skip
    assert set(pl["method"]) == {"base", "lora"}
    # continual learning: a two-stage sequence read from the same mirror
    ccfg = compose_continual([
        "model=tiny", f"model.source={tiny_model_dir}", "method=lora", "method.rank=2",
        "sequence.tasks=[winogrande,fever]", f"sequence.hub_root={mirror}", "sequence.check_rows=false",
        "sequence.max_train_samples=8", "sequence.max_eval_samples=8", "optim.max_steps=1", "optim.batch_size=4",
        "optim.max_length=32", "probe.steps=2", "probe.train_samples=8", "probe.batch_size=4",
        f"paths.results_dir={tmp_path / 'res'}", f"out={tmp_path / 'continual'}", "device=cpu",
    ])  # fmt: skip
    assert run_continual(ccfg, log=lambda _m: None).is_dir()


def test_old_winogrande_revision_fails_the_training_code_path(tiny_model_dir, mirror, tmp_path):
    """The registry's old WinoGrande entry (config winogrande_xl at refs/convert/parquet) against the
    branch's real layout: lvf-train fails with the real cause, before any training."""
    from lora_vs_full.config import compose_train
    from lora_vs_full.runs import execute

    branch = mirror / "allenai/winogrande/refs/convert/parquet"
    for split in ("train", "validation", "test"):
        src = mirror / f"allenai/winogrande/main/winogrande_xl/{split}-00000-of-00001.parquet"
        (branch / "winogrande_xl" / split).mkdir(parents=True, exist_ok=True)
        (branch / "winogrande_xl" / split / "0000.parquet").write_bytes(src.read_bytes())
    cfg = compose_train(_train_overrides(tiny_model_dir, mirror, tmp_path / "runs", "winogrande")
                        + ["task.revision=refs/convert/parquet"])  # fmt: skip
    with pytest.raises(UserError, match=r"no such config at this revision .*Available: \['default'\]"):
        execute(cfg, log=lambda _m: None, progress=False)


def test_preflight_paper_offline_plans_and_names_what_it_could_not_check(capsys, monkeypatch):
    from lora_vs_full.cli import preflight

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight.main(["paper", "measure_steps=0", "figures=[fig5]"])
    out = capsys.readouterr().out
    assert "Hub OFFLINE" in out and "rank" not in out.split("plan")[0]
    assert "lora-r768-a1536-all_linear" in out  # rank 768 (the effective-rank comparison) is planned
    for task in TASKS:
        assert f"NOT RUN: data {task}: " in out
    assert "NOT RUN: model FacebookAI/roberta-base@main" in out
    assert "checks passed, 0 failed" in out


def test_preflight_checks_a_hub_mirror_through_the_training_path(capsys, monkeypatch, mirror):
    from lora_vs_full.cli import preflight

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_:  # the tiny mirror's row counts are not the releases'
        preflight.main(["paper", "--hub-root", str(mirror), "measure_steps=0", "figures=[fig5]"])
    assert exit_.value.code == 2
    out = capsys.readouterr().out
    assert "FAILED: data sst2 (" in out and "8 rows, expected 67,349" in out
    assert "FAILED: data fever (" in out and "unique claims, expected 145,449" in out


def test_preflight_offline_preset_measures_steps(capsys):
    from lora_vs_full.cli import preflight

    preflight.main(["offline", "measure_steps=1", "figures=[fig5]", "measure_seq_len=16"])
    out = capsys.readouterr().out
    assert "measured on cpu" in out and "s/step full FT" in out and "device time:" in out
    assert "ok: data synth_sentiment: 4,000 train / 800 eval rows" in out


def test_preflight_bad_settings():
    from lora_vs_full.cli import preflight

    with pytest.raises(UserError, match="unknown preflight setting 'measure_stpes'"):
        preflight.load_settings(["measure_stpes=2"])
    with pytest.raises(UserError, match="preset 'nope' has no conf/reproduce"):
        preflight.preset_runs("nope", preflight.load_settings([]), None, None)


def test_preflight_llama_lists_every_public_checkpoint_it_could_not_resolve(capsys, monkeypatch):
    from lora_vs_full.cli import preflight

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight.main(["llama"])
    out = capsys.readouterr().out
    assert "NOT RUN: model meta-llama/Llama-2-7b-hf@main: resolve the commit, download size, gated?" in out
    assert "NOT RUN: model LoRA-TMLR-2024/magicoder-lora-rank-256-alpha-512@main" in out
