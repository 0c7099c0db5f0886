"""Bad input, everywhere: every ``lvf-*`` command and ``make`` target answers each case of this table with
one line ``error: ...`` naming the value and the fix, exit status 2, no traceback, and nothing written.

The table is the contract: add a row whenever a new option or input appears. The command cases run
through the real console entry points (``main()``, Hydra and all, with the command line in ``sys.argv``)
inside ONE subprocess, so the table costs one set of imports rather than one per case; the ``make``
cases run ``make`` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# (id, command, argv, regex the single error line must match). Placeholders: {tiny} a tiny base model,
# {out} this case's own output directory, {unwritable} a path under a regular file, {corrupt_run} a run
# directory whose final.json is truncated, {no_final} a run directory without final.json, {truncated} a
# model directory with a truncated model.safetensors, {no_weights} a PEFT adapter directory without
# weights, {bad_label} / {no_column} SST-2 folders with a bad label / a missing column, {empty} an empty
# text file, {nowhere} a path that does not exist.
SMOKE = ["debug=smoke", "model.source={tiny}", "paths.results_dir={out}"]
A_FAST = ["ks=[10]", "epsilons=[0.5]", "sim_n=4", "progress=false"]
CASES = [
    # ---- lvf-train
    ("train-rank-abc", "train", [*SMOKE, "method.rank=abc"], r"method\.rank=abc.*Integer"),
    ("train-unknown-key", "train", [*SMOKE, "method.rnak=8"], r"unknown key 'method\.rnak'"),
    (
        "train-unknown-task",
        "train",
        [*SMOKE, "task=nope"],
        r"task=nope is not a known task: choose one of .*sst2",
    ),
    ("train-unknown-method", "train", [*SMOKE, "method=qlora"], r"method=qlora is not a known method"),
    (
        "train-negative-lr",
        "train",
        [*SMOKE, "optim.lr=-1e-5", "method=full"],
        r"optim\.lr=-1e-05 must be > 0",
    ),
    ("train-negative-samples", "train", [*SMOKE, "task.max_train_samples=-5"], r"task\.max_train_samples=-5"),
    ("train-rank-zero", "train", [*SMOKE, "method.rank=0"], r"method\.rank=0 is invalid"),
    (
        "train-dropout-1.5",
        "train",
        [*SMOKE, "method.dropout=1.5"],
        r"method\.dropout=1\.5 must be in \[0, 1\)",
    ),
    ("train-bad-device", "train", [*SMOKE, "device=gpu"], r"device='gpu'"),
    ("train-float-seed", "train", [*SMOKE, "seed=1.5"], r"seed=1\.5.*Integer"),
    ("train-bad-override-syntax", "train", [*SMOKE, "optim.lr=[1"], r"cannot parse the override"),
    ("train-state-every-0", "train", [*SMOKE, "save_state_every=0"], r"save_state_every=0 must be >= 1"),
    ("train-missing-data-dir", "train", [*SMOKE, "task=sst2", "task.data_dir={nowhere}"], r"nowhere"),
    ("train-tsv-bad-label", "train", [*SMOKE, "task=sst2", "task.data_dir={bad_label}"], r"label"),
    (
        "train-tsv-missing-column",
        "train",
        [*SMOKE, "task=sst2", "task.data_dir={no_column}"],
        r"column|label",
    ),
    (
        "train-unwritable-results",
        "train",
        ["debug=smoke", "model.source={tiny}", "paths.results_dir={unwritable}"],
        r"a_file.*not a directory",
    ),
    # ---- lvf-analyze
    ("analyze-ks-ten", "analyze", ["base={tiny}", "tuned={tiny}", "out={out}", "ks=[ten]"], r"ks"),
    (
        "analyze-k-zero",
        "analyze",
        ["base={tiny}", "tuned={tiny}", "out={out}", "ks=[0]", "epsilons=[0.5]"],
        r"k=0",
    ),
    (
        "analyze-eps-1.5",
        "analyze",
        ["base={tiny}", "tuned={tiny}", "out={out}", "ks=[10]", "epsilons=[0.5,1.5]"],
        r"epsilon=1\.5",
    ),
    (
        "analyze-negative-sim-n",
        "analyze",
        ["base={tiny}", "tuned={tiny}", "out={out}", *A_FAST, "sim_n=-1"],
        r"sim_n",
    ),
    (
        "analyze-bad-dtype",
        "analyze",
        ["base={tiny}", "tuned={tiny}", "out={out}", *A_FAST, "dtype=float16"],
        r"dtype",
    ),
    (
        "analyze-unwritable-out",
        "analyze",
        ["base={tiny}", "tuned={tiny}", "out={unwritable}", *A_FAST],
        r"out=.*a_file/out is not writable: .*a_file is a file",
    ),
    (
        "analyze-corrupt-final",
        "analyze",
        ["runs={corrupt_run}", "out={out}", *A_FAST],
        r"final\.json is corrupt",
    ),
    (
        "analyze-truncated-safetensors",
        "analyze",
        ["base={tiny}", "tuned={truncated}", "out={out}", *A_FAST],
        r"model\.safetensors",
    ),
    (
        "analyze-adapter-without-weights",
        "analyze",
        ["base={tiny}", "tuned={no_weights}", "out={out}", *A_FAST],
        r"adapter|weights",
    ),
    (
        "analyze-missing-tuned",
        "analyze",
        ["base={tiny}", "tuned={nowhere}", "out={out}", *A_FAST],
        r"nowhere",
    ),
    # ---- lvf-continual
    (
        "continual-unknown-task",
        "continual",
        ["model=tiny", "model.source={tiny}", "out={out}", "sequence.tasks=[synth_sentiment,nope]"],
        r"nope",
    ),
    ("continual-rank-abc", "continual", ["model=tiny", "out={out}", "method.rank=abc"], r"method\.rank=abc"),
    (
        "continual-negative-probe-steps",
        "continual",
        [
            "model=tiny",
            "model.source={tiny}",
            "out={out}",
            "sequence.tasks=[synth_sentiment,synth_nli]",
            "probe.steps=-1",
        ],
        r"probe\.steps",
    ),
    (
        "continual-eps-2",
        "continual",
        [
            "model=tiny",
            "model.source={tiny}",
            "out={out}",
            "sequence.tasks=[synth_sentiment,synth_nli]",
            "spectral.epsilons=[2.0]",
        ],
        r"epsilon",
    ),
    (
        "continual-negative-samples",
        "continual",
        [
            "model=tiny",
            "model.source={tiny}",
            "out={out}",
            "sequence.tasks=[synth_sentiment,synth_nli]",
            "sequence.max_train_samples=-3",
        ],
        r"max_train_samples",
    ),
    (
        "continual-unwritable-out",
        "continual",
        [
            "model=tiny",
            "model.source={tiny}",
            "out={unwritable}",
            "sequence.tasks=[synth_sentiment,synth_nli]",
        ],
        r"a_file.*not a directory",
    ),
    # ---- lvf-pseudoloss
    (
        "pseudoloss-unwritable-out",
        "pseudoloss",
        ["tuned={tiny}", "out={unwritable}", "text_file={empty}"],
        r"out=.*a_file/out is not writable",
    ),
    ("pseudoloss-n-texts-ten", "pseudoloss", ["tuned={tiny}", "out={out}", "corpus.n_texts=ten"], r"n_texts"),
    (
        "pseudoloss-negative-n-texts",
        "pseudoloss",
        ["tuned={tiny}", "out={out}", "text_file={empty}", "corpus.n_texts=-1"],
        r"n_texts",
    ),
    (
        "pseudoloss-empty-text-file",
        "pseudoloss",
        ["tuned={tiny}", "out={out}", "text_file={empty}"],
        r"empty",
    ),
    (
        "pseudoloss-missing-text-file",
        "pseudoloss",
        ["tuned={tiny}", "out={out}", "text_file={nowhere}"],
        r"nowhere",
    ),
    (
        "pseudoloss-corrupt-final",
        "pseudoloss",
        ["runs={corrupt_run}", "out={out}", "text_file={empty}"],
        r"final\.json is corrupt|empty",
    ),
    # ---- lvf-intervene
    ("intervene-k-zero", "intervene", ["run={corrupt_run}", "out={out}", "k=0"], r"k=0"),
    ("intervene-k-ten", "intervene", ["run={corrupt_run}", "out={out}", "k=ten"], r"k=ten"),
    ("intervene-eps-1.5", "intervene", ["run={corrupt_run}", "out={out}", "epsilon=1.5"], r"epsilon=1\.5"),
    ("intervene-negative-lambda", "intervene", ["run={corrupt_run}", "out={out}", "lambdas=[-1]"], r"lambda"),
    ("intervene-bad-mode", "intervene", ["run={corrupt_run}", "out={out}", "mode=bogus"], r"mode"),
    (
        "intervene-corrupt-final",
        "intervene",
        ["run={corrupt_run}", "out={out}", "text_file={empty}"],
        r"final\.json is corrupt|empty",
    ),
    ("intervene-incomplete-run", "intervene", ["run={no_final}", "out={out}"], r"final\.json"),
    (
        "intervene-unwritable-out",
        "intervene",
        ["run={no_final}", "out={unwritable}"],
        r"out=.*is not writable",
    ),
]

_DRIVER = r"""
import contextlib, importlib, io, json, sys, time, traceback
cases_file, results_file = sys.argv[1], sys.argv[2]
cases = json.load(open(cases_file))
results = {}
for case in cases:
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    mod = importlib.import_module("lora_vs_full.cli." + case["command"])
    sys.argv = ["lvf-" + case["command"], *case["argv"]]
    err, out, code, t0 = io.StringIO(), io.StringIO(), 0, time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            mod.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            code = "uncaught"
            traceback.print_exc(file=err)
    results[case["id"]] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue(),
                           "seconds": round(time.perf_counter() - t0, 2)}
json.dump(results, open(results_file, "w"))
"""


@pytest.fixture(scope="module")
def inputs(tiny_model_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("a file, not a directory\n")
    run = root / "runs" / "tiny" / "synth_sentiment" / "full" / "seed42"
    (run / "checkpoint").mkdir(parents=True)
    (run / "final.json").write_text('{"run_id": "tiny/synth_sentiment/full/seed42", "base_mod')
    no_final = root / "incomplete" / "seed42"
    no_final.mkdir(parents=True)
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:5000])
    no_weights = root / "adapter"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value"],
        "base_model_name_or_path": str(tiny_model_dir), "task_type": "SEQ_CLS"}))  # fmt: skip
    for name, header, row in (("bad_label", "sentence\tlabel", "a fine film\t7"),
                              ("no_column", "sentence", "a fine film")):  # fmt: skip
        d = root / name / "SST-2"
        d.mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            (d / split).write_text(f"{header}\n{row}\n{row}\n")
    (root / "empty.txt").write_text("")
    return {
        "tiny": str(tiny_model_dir), "unwritable": str(root / "a_file" / "out"), "corrupt_run": str(run),
        "no_final": str(no_final), "truncated": str(truncated), "no_weights": str(no_weights),
        "bad_label": str(root / "bad_label"), "no_column": str(root / "no_column"),
        "empty": str(root / "empty.txt"), "nowhere": str(root / "nowhere"), "root": root,
    }  # fmt: skip


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory) -> dict:
    """Run every case of the table in one subprocess; ``{id: {"code", "stderr", "stdout"}}``."""
    work = tmp_path_factory.mktemp("cases")
    cases = []
    for cid, command, argv, _ in CASES:
        values = {k: v for k, v in inputs.items() if k != "root"} | {"out": str(work / cid)}
        cases.append({"id": cid, "command": command, "argv": [a.format(**values) for a in argv]})
    (work / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "LVF_RESULTS": str(work / "default_results")}  # fmt: skip
    env.pop("LVF_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(work / "cases.json"), str(work / "results.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((work / "results.json").read_text())
    out["_work"] = work
    return out


def _written(path: Path) -> list[str]:
    """Files under a case's output directory, Hydra's own run records excepted."""
    if not path.exists():
        return []
    return [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and "hydra" not in p.parts]


@pytest.mark.parametrize("cid,command,argv,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(results, cid, command, argv, pattern):
    import re

    r = results[cid]
    assert "Traceback" not in r["stderr"], r["stderr"][-3000:]
    errors = [line for line in r["stderr"].splitlines() if line.startswith("error: ")]
    assert r["code"] == 2, (r["code"], r["stderr"][-2000:])
    assert len(errors) == 1, r["stderr"][-2000:]
    assert re.search(pattern, errors[0]), errors[0]
    assert _written(results["_work"] / cid) == []
    assert _written(results["_work"] / "default_results") == []


def test_the_table_covers_every_command():
    commands = {c[1] for c in CASES}
    assert commands == {"train", "analyze", "continual", "pseudoloss", "intervene"} and len(CASES) >= 30


MAKE_CASES = [
    ("make-unknown-preset", ["reproduce-fig5", "PRESET=nope"], r"unknown reproduction preset 'fig5_nope'"),
    (
        "make-missing-data-dir",
        ["reproduce-fig5", "PRESET=offline", "DATA_DIR={nowhere}"],
        r"DATA_DIR=.*nowhere is not a directory",
    ),
]


@pytest.mark.parametrize("cid,args,pattern", MAKE_CASES, ids=[c[0] for c in MAKE_CASES])
def test_make_targets_answer_bad_input_in_one_line(inputs, tmp_path, cid, args, pattern):
    import re

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LVF_RESULTS": str(tmp_path / "results")}
    args = [a.format(nowhere=inputs["nowhere"]) for a in args]
    # -o: never rebuild the venv stamp from here; -s: only the recipes' own output
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "-C", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-2000:]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.csv"))
