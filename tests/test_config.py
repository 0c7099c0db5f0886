"""lvf-train configuration: every preset composes, typos and impossible values fail clearly, paper rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from lora_vs_full.cli._common import CONFIG_DIR
from lora_vs_full.config import compose_train, validate
from lora_vs_full.errors import UserError
from lora_vs_full.models.methods import lora_alpha_and_lr, method_lr
from lora_vs_full.runs import method_tag, run_dir_for

GROUPS = ("model", "task", "method", "optim", "launcher", "experiment", "debug")


def _options(group: str) -> list[str]:
    names = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    # experiment/continual_* belong to lvf-continual's continual.yaml, not to train.yaml
    return [n for n in names if not (group == "experiment" and n.startswith("continual_"))]


@pytest.mark.parametrize("group", GROUPS)
def test_every_preset_composes_and_validates(group):
    options = _options(group)
    assert options, f"conf/{group}/ is empty"
    for option in options:
        cfg = compose_train([f"{group}={option}"])
        OmegaConf.resolve(cfg)  # every interpolation resolves
        validate(cfg)


def test_defaults_are_the_paper_recipe():
    cfg = compose_train([])
    o = cfg.optim
    assert (o.batch_size, o.epochs, o.weight_decay, o.warmup_ratio, o.max_length, o.lr) == (
        16, 5, 0.0, 0.06, 512, 1e-5,
    )  # fmt: skip
    assert (cfg.model.name, cfg.seed, cfg.method.targets, cfg.method.init) == (
        "roberta-base", 42, "all_linear", "gaussian",
    )  # fmt: skip


@pytest.mark.parametrize("rank", [1, 2, 4, 8, 16, 64, 256, 2048])
def test_paper_rule_rank_alone_sets_alpha_and_lr(rank):
    m = compose_train(["method=lora", f"method.rank={rank}"]).method
    alpha, lr = lora_alpha_and_lr(m)
    assert alpha == 2 * rank
    assert lr == pytest.approx(2.4e-3 / (2 * rank))  # alpha * lr = 2.4e-3
    assert method_tag(m) == f"lora-r{rank}-a{2 * rank}-all_linear"


def test_alpha_policies_and_explicit_lr():
    fixed = compose_train(["method.rank=64", "method.alpha_policy=fixed"]).method
    assert lora_alpha_and_lr(fixed) == (8.0, pytest.approx(3e-4))
    rs = compose_train(["method.rank=16", "method.alpha_policy=rslora"]).method
    assert lora_alpha_and_lr(rs)[0] == 8.0 and method_tag(rs) == "lora-r16-a8-rslora-all_linear"
    explicit = compose_train(["method.rank=8", "method.lr=3e-4"]).method
    assert lora_alpha_and_lr(explicit) == (16.0, 3e-4)
    assert method_tag(explicit) == "lora-r8-a16-all_linear-lr0.0003"


def test_offline_preset_rates_are_the_documented_ones():
    def lr(*o):
        cfg = compose_train(["experiment=offline_sst2", *o])
        return method_lr(cfg.method, cfg.optim)

    assert lr("method.rank=1") == pytest.approx(4e-4)
    assert lr("method.rank=64") == pytest.approx(5e-5)
    assert lr("method=full") == pytest.approx(3e-5)
    cfg = compose_train(["experiment=offline_sst2"])
    assert (cfg.model.name, cfg.task.name, cfg.task.max_train_samples) == ("minilm", "sst2", 2000)
    assert (cfg.optim.max_steps, cfg.optim.max_length) == (250, 64)


@pytest.mark.parametrize(("rank", "power", "expected"), [(1, 0.25, 8e-4), (16, 0.25, 4e-4), (81, 0.25, 8e-4 / 3),
                                                      (16, 0.5, 2e-4), (16, 0.0, 8e-4)])  # fmt: skip
def test_rank_power_rule_known_answers(rank, power, expected):
    m = compose_train(["method=lora", f"method.rank={rank}", "method.lr_rule=rank_power", "method.lr_rank1=8e-4",
                       f"method.lr_rank_power={power}"]).method  # fmt: skip
    assert lora_alpha_and_lr(m) == (2.0 * rank, pytest.approx(expected))


def test_inv_sqrt_rank_is_rank_power_one_half_for_lr_and_run_identity():
    """Runs made under the older rule name keep matching (same lr, same identity)."""
    from lora_vs_full.runs import identity

    old = compose_train(["experiment=offline_sst2", "method.rank=8", "method.lr_rule=inv_sqrt_rank"])
    new = compose_train(["experiment=offline_sst2", "method.rank=8"])
    assert new.method.lr_rule == "rank_power" and new.method.lr_rank_power == 0.5
    assert method_lr(old.method, old.optim) == pytest.approx(method_lr(new.method, new.optim))
    assert identity(old) == identity(new)
    other = compose_train(["experiment=offline_sst2", "method.rank=8", "method.lr_rank_power=0.25"])
    assert identity(other) != identity(new)


def test_full_lr_comes_from_optim_unless_method_lr():
    cfg = compose_train(["method=full"])
    assert method_lr(cfg.method, cfg.optim) == 1e-5 and method_tag(cfg.method) == "full"
    cfg = compose_train(["method=full", "method.lr=3e-5"])
    assert method_lr(cfg.method, cfg.optim) == 3e-5 and method_tag(cfg.method) == "full-lr3e-05"


def test_typo_fails_at_compose_time_naming_the_key():
    with pytest.raises(ConfigCompositionException, match=r"method\.rnak"):
        compose_train(["method.rnak=8"])
    with pytest.raises(ConfigCompositionException, match=r"optim\.bacth_size"):
        compose_train(["optim.bacth_size=8"])
    with pytest.raises(ConfigCompositionException):  # wrong type
        compose_train(["method.rank=eight"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("method.rank=0", r"method\.rank=0 is invalid: use an integer in 1\.\.2048"),
        ("method.rank=-4", r"method\.rank=-4"),
        ("method.rank=4096", r"method\.rank=4096"),
        ("method.alpha_policy=2R", r"unknown method\.alpha_policy='2R': choose one of 2r, fixed, rslora"),
        ("method.targets=all", r"unknown method\.targets='all'"),
        ("method.lr=0", r"method\.lr=0.0 must be > 0"),
        ("optim.lr=-1e-5", r"optim\.lr=-1e-05 must be > 0"),
        ("optim.max_steps=0", r"optim\.max_steps=0"),
        ("tracker=tensorbord", r"unknown tracker='tensorbord'"),
    ],
)
def test_impossible_values_fail_validation_with_one_line(override, match):
    cfg = compose_train([override])
    with pytest.raises(UserError, match=match) as exc:
        validate(cfg)
    assert "\n" not in str(exc.value)


def test_unknown_group_options_fail_at_compose():
    for override in ("task=foo", "model=gpt5", "method=qlora"):  # method=dora exists (PEFT variants)
        with pytest.raises(MissingConfigException, match=override.split("=")[1]):
            compose_train([override])


def test_full_with_rank_is_rejected():
    with pytest.raises(UserError, match="method=full has no rank"):
        validate(compose_train(["method=full", "+method.rank=8"]))


def test_run_dir_naming(tmp_path):
    cfg = compose_train(["task=sst2", "method.rank=8", "seed=3", f"paths.results_dir={tmp_path}"])
    assert (
        run_dir_for(cfg) == tmp_path / "runs" / "roberta-base" / "sst2" / "lora-r8-a16-all_linear" / "seed3"
    )
    cfg = compose_train(["method=full", "model=minilm", f"paths.runs_dir={tmp_path}"])
    assert run_dir_for(cfg) == tmp_path / "minilm" / "mnli" / "full" / "seed42"


def test_hydra_output_dirs_live_under_results_dir(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.chdir(tmp_path)
    compose_train([])  # registers the schema
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.results_dir=/x/res"], return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("/x/res/hydra/")
    assert cfg.hydra.sweep.dir.startswith("/x/res/hydra/")
    assert cfg.hydra.job.chdir is False


def test_slurm_launcher_preset_selects_the_submitit_plugin():
    from hydra import compose, initialize_config_dir

    compose_train([])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1
