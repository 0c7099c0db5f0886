"""lvf-reproduce: every preset composes against its schema, its runs compose as lvf-train configs, a sweep
finishes past a failing run, and bad input is one line."""

from __future__ import annotations

import pytest

from lora_vs_full.cli import reproduce as cli
from lora_vs_full.config import compose_train, validate
from lora_vs_full.errors import UserError
from lora_vs_full.reproduce import common, fig5


def _loadable_presets():
    out = []
    for name in common.preset_names():
        figure = name.split("_", 1)[0]
        try:
            _, schema = cli.resolve(figure)
        except (ImportError, AttributeError):  # a reproduction module still being written
            continue
        out.append((name, schema))
    return out


@pytest.mark.parametrize("name,schema", _loadable_presets(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_preset_composes_against_its_schema(name, schema):
    cfg = common.load_preset(name, schema=schema)
    assert cfg.preset == name.split("_", 1)[1]


@pytest.mark.parametrize("preset", ["offline", "paper"])
@pytest.mark.parametrize("data_dir", [None, "/data"])
def test_fig5_runs_compose_as_valid_train_configs(preset, data_dir):
    cfg = common.load_preset(f"fig5_{preset}", schema=fig5.Fig5Preset)
    sweep = fig5.sweep(cfg, data_dir)
    tasks = cfg.data_tasks if data_dir else cfg.tasks
    assert len(sweep) == len(tasks) * (len(cfg.ranks) + int(cfg.full)) * len(cfg.seeds)
    for overrides in sweep[:: max(1, len(sweep) // 7)]:
        validate(compose_train(overrides))  # raises on anything impossible


def test_preset_overrides_are_typed():
    with pytest.raises(UserError, match="rnak"):
        common.load_preset("fig5_offline", ["+rnak=1"], schema=fig5.Fig5Preset)
    with pytest.raises(UserError, match="'abc'"):
        common.load_preset("fig5_offline", ["ranks=[abc]"], schema=fig5.Fig5Preset)
    assert list(common.load_preset("fig5_offline", ["seeds=[1,2,3]"], schema=fig5.Fig5Preset).seeds) == [
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["fig99"], "unknown figure 'fig99'"),
        (["fig5", "--preset", "nope"], "unknown reproduction preset 'fig5_nope'"),
        (["fig5", "--data-dir", "/no/such/dir"], "DATA_DIR=/no/such/dir is not a directory"),
        (["fig5", "ranks"], "is not key=value"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1


def test_a_sweep_finishes_past_a_failing_run(tmp_path, tiny_model_dir):
    base = [
        "debug=smoke",
        f"model.source={tiny_model_dir}",
        f"paths.results_dir={tmp_path}",
        "optim.max_steps=2",
    ]
    sweep = [[*base, "method=lora", "method.rank=0"], [*base, "method=full"], [*base, "method.rnak=1"]]
    logs = []
    with pytest.raises(UserError, match=r"2 of 3 runs failed \(1 completed\)") as exc:
        common.train_runs(sweep, log=logs.append)
    assert "method.rank=0" in str(exc.value) and "rnak" in str(exc.value)
    done = list((tmp_path / "runs").glob("*/*/full/seed42/final.json"))
    assert len(done) == 1  # the good run in the middle completed


def test_newcombe_difference_interval_known_answer():
    """Newcombe (1998), Stat. Med. 17:873, Table II example (56/70 vs 48/80): 0.2000 [0.0524, 0.3339]."""
    from lora_vs_full import stats

    e = stats.proportion_difference(56, 70, 48, 80)
    assert (round(e.mean, 4), round(e.low, 4), round(e.high, 4)) == (0.2, 0.0524, 0.3339)
    assert e.distinguishable() and not stats.proportion_difference(50, 100, 52, 100).distinguishable()


def test_fig5_headline_difference_to_full_ft(tmp_path):
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import fig5 as fig5_draw

    wide = pd.DataFrame(
        {"run": ["a", "b", "c"], "task": ["t", "t", "t"], "method": ["lora", "lora", "full"], "rank": [1, 8, None],
         "eval_accuracy": [56 / 70, 0.8, 48 / 80], "eval_n": [70, 80, 80]}
    )  # fmt: skip
    out = fig5_draw._vs_full(wide).set_index("run")
    assert round(out.loc["a", "d_low"], 4) == 0.0524 and pd.isna(out.loc["c", "d_acc"])
    assert round(out.loc["b", "d_acc"], 6) == 0.2
