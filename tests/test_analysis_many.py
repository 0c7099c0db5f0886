"""One pass over many fine-tunes of one base (tiny LLaMA-shaped models built here, sharded safetensors,
PEFT adapters and full fine-tunes): equal to separate pair analyses; tuned lists and manifests on the
command line; legacy adapter_model.bin; planted pickles refused; the budget; pair-mode tables draw."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_analysis import _one_thread  # noqa: F401 (autouse fixture)

from lora_vs_full.analysis import analyze_many, analyze_pair
from lora_vs_full.errors import UserError
from lora_vs_full.weights import open_model, open_pair, open_tuned

GRID = dict(ks=[1, 3, 10], epsilons=[0.3, 0.5, 0.9], sim_n=8, progress=False)
FAST = ["ks=[1,10]", "epsilons=[0.3,0.5]", "sim_n=8", "progress=false"]
LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=32,
)
# tloen/alpaca-lora-7b's adapter_config.json keys (early PEFT), values of the tiny model
LEGACY_CONFIG = {
    "base_model_name_or_path": "decapoda-research/llama-7b-hf",
    "bias": "none",
    "enable_lora": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "lora_alpha": 4,
    "lora_dropout": 0.05,
    "merge_weights": False,
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 2,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "task_type": "CAUSAL_LM",
}


def _lora(base: Path, out: Path, *, r: int, alpha: int, targets, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base)
    pm = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    pm.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict[str, Path]:
    """base (3 shards), lora-r2 (q/k/v/o), lora-r4 (all 7), full (spike + noise, 3 shards)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA))
    model.save_pretrained(root / "base", max_shard_size="12KB")
    assert (root / "base" / "model.safetensors.index.json").is_file()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    for k, W in sd.items():
        if k.endswith("proj.weight"):
            W += 1e-3 * torch.randn(W.shape, generator=g)
    W = sd["model.layers.1.mlp.up_proj.weight"]
    u, v = torch.randn(W.shape[0], generator=g), torch.randn(W.shape[1], generator=g)
    W += 10 * torch.linalg.matrix_norm(W, 2) * torch.outer(u / u.norm(), v / v.norm())
    model.load_state_dict(sd)
    model.save_pretrained(root / "full", max_shard_size="12KB")
    attn = ["q_proj", "k_proj", "v_proj", "o_proj"]
    return {
        "base": root / "base",
        "lora-r2": _lora(root / "base", root / "lora-r2", r=2, alpha=4, targets=attn, seed=2),
        "lora-r4": _lora(root / "base", root / "lora-r4", r=4, alpha=8, targets=[*attn, "gate_proj", "up_proj", "down_proj"], seed=3),
        "full": root / "full",
    }  # fmt: skip


def test_one_pass_equals_separate_pairs(llama):
    base = open_model(llama["base"])
    names = ["lora-r2", "lora-r4", "full"]
    many = analyze_many(base, [open_tuned(base, llama[n]) for n in names], names=names, **GRID)
    for name, res in zip(names, many, strict=True):
        b, t = open_pair(llama["base"], llama[name])
        ref = analyze_pair(b, t, name=name, **GRID)
        pd.testing.assert_frame_equal(res.intruders, ref.intruders)
        pd.testing.assert_frame_equal(res.matrices, ref.matrices)
        assert res.spectra.keys() == ref.spectra.keys()
        assert all(torch.equal(res.spectra[k], ref.spectra[k]) for k in res.spectra)
    meta = {r.name: r.matrices.iloc[0][["method", "rank", "alpha"]].tolist() for r in many}
    assert meta["lora-r2"] == ["lora", 2, 4.0] and meta["lora-r4"] == ["lora", 4, 8.0]
    assert meta["full"][0] == "full" and pd.isna(meta["full"][1])
    assert len(many[0].matrices) == 14  # 2 layers x 7 matrices
    head = many[2].intruders.query("k == 10 and epsilon == 0.5").set_index("matrix")["n_intruders"]
    assert head["layer1.up"] == 1 and head.sum() == 1  # the planted spike, nothing else


def _run(overrides, capsys, monkeypatch, tmp_path):
    from lora_vs_full.cli._common import user_errors_exit
    from lora_vs_full.cli.analyze import compose_analyze, run

    monkeypatch.setenv("LVF_RESULTS", str(tmp_path / "results"))
    cfg = compose_analyze([*FAST, *overrides])
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(run)(cfg)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr()


def test_tuned_list_and_manifest_then_fig5_draws(llama, tmp_path, capsys, monkeypatch, caplog):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import fig5

    out = tmp_path / "many"
    tuned = f"tuned=[{llama['lora-r2']},{llama['full']}]"
    code, cap = _run(
        [f"base={llama['base']}", tuned, f"out={out}", "meta.model=tiny-llama", "meta.task=synth"],
        capsys,
        monkeypatch,
        tmp_path,
    )
    assert code == 0, cap.err
    intr = pd.read_parquet(out / "intruders.parquet")
    assert set(intr["run"]) == {str(llama["lora-r2"]), str(llama["full"])}
    assert set(intr["method"]) == {"lora", "full"} and set(intr["task"]) == {"synth"}
    assert len(list((out / "parts").iterdir())) == 2 and not (tmp_path / "results" / "cache").exists()
    paths = fig5.make_fig5(out, tmp_path / "fig", k=10)
    assert all(p.is_file() for p in paths)
    energy = fig5.make_fig5(out, tmp_path / "fig", k=10, metric="energy_share", name="fig5_energy")
    near = fig5.fig5_table(out, metric="nearest_rank")
    assert near["nearest_rank"].dropna().between(0, 1).all() and near["nearest_rank"].notna().any()
    table = pd.read_csv(energy[2])
    assert table["energy_share"].between(0, 1).all() and "n_intruders" not in table.columns

    # two full fine-tunes of one base (the Alpaca pair): two curves, named by their owner, not averaged
    twin = intr[intr["method"] == "full"].assign(run="PKU-Alignment/alpaca-7b-reproduced")
    twins = pd.concat(
        [intr.assign(run=intr["run"].where(intr["method"] != "full", "chavinlo/alpaca-native")), twin]
    )
    labels = set(fig5.fig5_table(twins)["label"])
    assert {"full FT (chavinlo)", "full FT (PKU-Alignment)"} <= labels

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"groups:\n  - base: {llama['base']}\n    model: tiny-llama\n    fine_tunes:\n"
        f"      - {{id: {llama['lora-r4']}, task: synth, label: r4}}\n"
        f"      - {{id: {llama['full']}, task: synth, label: full}}\n"
    )
    out2 = tmp_path / "manifest"
    code, cap = _run([f"manifest={manifest}", f"out={out2}"], capsys, monkeypatch, tmp_path)
    assert code == 0, cap.err
    first = pd.read_parquet(out2 / "intruders.parquet")
    assert list(dict.fromkeys(first["run"])) == ["r4", "full"] and (first["rank"].dropna() == 4).all()
    mtime = (out2 / "parts" / "r4" / "intruders.parquet").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="lvf-analyze"):
        code, cap = _run([f"manifest={manifest}", f"out={out2}"], capsys, monkeypatch, tmp_path)
    assert code == 0 and caplog.text.count("up to date, skipping") == 2
    assert (out2 / "parts" / "r4" / "intruders.parquet").stat().st_mtime_ns == mtime
    assert pd.read_parquet(out2 / "intruders.parquet").equals(first)
    # pair mode writes method/rank/alpha too, so its table draws directly (was int(NaN))
    code, cap = _run(
        [f"base={llama['base']}", f"tuned={llama['lora-r2']}", f"out={tmp_path / 'pair'}"],
        capsys,
        monkeypatch,
        tmp_path,
    )
    assert code == 0, cap.err
    assert fig5.make_fig5(tmp_path / "pair", tmp_path / "fig", name="pair")[0].is_file()


@pytest.mark.parametrize(
    "entry,message",
    [("{id: x, rank: 16}", "read from the adapter"), ("{id: x, colour: red}", "unknown key")],
    ids=["rank-typed-by-hand", "unknown-key"],
)
def test_manifest_refuses_hand_typed_rank(tmp_path, entry, message):
    from lora_vs_full.weights.manifest import read_manifest

    m = tmp_path / "m.yaml"
    m.write_text(f"base: b\nfine_tunes:\n  - {entry}\n")
    with pytest.raises(UserError, match=message):
        read_manifest(m)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy-pickle"])
def test_legacy_bin_adapter_with_old_keys(llama, tmp_path, zipfile):
    legacy = tmp_path / "alpaca-lora"
    legacy.mkdir()
    sd = load_file(str(llama["lora-r2"] / "adapter_model.safetensors"))
    torch.save(sd, legacy / "adapter_model.bin", _use_new_zipfile_serialization=zipfile)
    (legacy / "adapter_config.json").write_text(json.dumps(LEGACY_CONFIG))
    base = open_model(llama["base"])
    new, old = analyze_many(
        base, [open_tuned(base, llama["lora-r2"]), open_tuned(base, legacy)], names=["st", "bin"], **GRID
    )
    cols = [c for c in new.intruders.columns if c != "run"]
    pd.testing.assert_frame_equal(new.intruders[cols], old.intruders[cols])
    assert old.matrices.iloc[0][["method", "rank", "alpha"]].tolist() == ["lora", 2, 4.0]


class _Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.mark.parametrize("where", ["adapter", "full-model"])
@pytest.mark.parametrize("how", ["raw-pickle", "torch-save"])
def test_planted_pickle_never_runs(llama, tmp_path, where, how):
    marker = tmp_path / "marker"
    payload = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": _Planted(marker)}
    d = tmp_path / "evil"
    d.mkdir()
    if where == "adapter":
        (d / "adapter_config.json").write_text(json.dumps(LEGACY_CONFIG))
        f = d / "adapter_model.bin"
    else:
        (d / "config.json").write_text((llama["base"] / "config.json").read_text())
        f = d / "pytorch_model.bin"
    if how == "raw-pickle":
        f.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, f)
    base = open_model(llama["base"])
    with pytest.raises(UserError, match="cannot load .* safely"):
        open_tuned(base, d)
    assert not marker.exists()


def test_budget_refuses_with_the_number(llama, tmp_path, capsys, monkeypatch):
    args = [f"base={llama['base']}", f"tuned={llama['lora-r2']}", f"out={tmp_path / 'o'}"]
    code, cap = _run([*args, "budget.disk_gb=0.000001"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "of disk" in cap.err and "budget.disk_gb allows 0.000 GB" in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and not (tmp_path / "o" / "intruders.parquet").exists()
    code, cap = _run([*args, "budget.ram_gb=0.01"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "of RAM" in cap.err and "budget.ram_gb allows 0.010 GB" in cap.err
    code, cap = _run([*args, "cache=disk", "budget.disk_gb=0.000001"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "cache=memory" in cap.err


def test_plan_resolves_the_cache_policy(tmp_path):
    from lora_vs_full import budget

    shapes = ([(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]) * 32  # LLaMA-7B's 224 matrices
    kw = dict(
        cache_present_bytes=0, n_cells=2550, sim_n=100, k_max=50, download_bytes=0, where=tmp_path, ram_gb=1e3
    )
    many = budget.plan(
        shapes, n_tuned=8, one_pass=True, cache="auto", cache_storage_bytes=8, disk_gb=64, **kw
    )
    assert many.cache_policy == "off" and many.cache_new_bytes == 0
    assert 44e9 < many.cache_bytes < 45e9  # the 44.6 GB float64 cache, never written in one pass
    pair = budget.plan(
        shapes, n_tuned=1, one_pass=False, cache="auto", cache_storage_bytes=8, disk_gb=10, **kw
    )
    assert pair.cache_policy == "memory" and "does not fit" in pair.notes[0]
    half = budget.plan(
        shapes, n_tuned=1, one_pass=False, cache="auto", cache_storage_bytes=4, disk_gb=30, **kw
    )
    assert half.cache_policy == "disk" and half.cache_new_bytes == half.cache_bytes
    with pytest.raises(UserError, match=r"needs 44\.\d GB of disk"):
        budget.plan(
            shapes, n_tuned=1, one_pass=False, cache="disk", cache_storage_bytes=8, disk_gb=10, **kw
        ).check()


def test_typed_config_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    from lora_vs_full.cli.analyze import compose_analyze

    for bad, key in (
        (["ks=[ten]"], "ks"),
        (["k=ten"], "'k'"),
        (["budget.disk=3"], "budget.disk"),
        (["sim_n=many"], "sim_n"),
    ):
        with pytest.raises(ConfigCompositionException, match=key):
            compose_analyze(bad)
    cfg = compose_analyze(["ks=10", "epsilons=0.5", "cache=true"])
    assert list(cfg.ks) == [10] and list(cfg.epsilons) == [0.5] and cfg.cache == "True"


def test_shipped_llama_manifest_parses_and_downloads_are_budgeted(tmp_path, monkeypatch):
    from lora_vs_full import budget
    from lora_vs_full.cli.analyze import manifest_path
    from lora_vs_full.weights.manifest import read_manifest
    from lora_vs_full.weights.resolve import hub_download_bytes

    groups = read_manifest(manifest_path("fig5_llama"))
    assert [g.base for g in groups] == ["meta-llama/Llama-2-7b-hf", "huggyllama/llama-7b"]
    assert sum(len(g.fine_tunes) for g in groups) == 11
    assert all(ft.meta["task"] and ft.meta["model"] for g in groups for ft in g.fine_tunes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_download_bytes([("tloen/alpaca-lora-7b", None)]) is None  # offline: unknown, not 0
    assert hub_download_bytes([(str(tmp_path), None)]) == 0  # local paths download nothing
    with pytest.raises(UserError, match=r"would download 50\.0 GB but only 10\.0 GB is allowed"):
        budget.check_downloads(50 * 10**9, disk_gb=10, where=tmp_path, what="the group")


def test_download_estimate_skips_cached_files(monkeypatch):
    """The Hub listing's sizes, minus files already in the HF cache (a rerun is not refused for them)."""
    from types import SimpleNamespace

    import huggingface_hub

    from lora_vs_full.weights.resolve import hub_download_bytes

    def f(name, size):
        return SimpleNamespace(rfilename=name, size=size)

    listing = {
        "org/full": [f("config.json", 1), f("model-00001-of-00002.safetensors", 700), f("model-00002-of-00002.safetensors", 300)],
        "org/legacy-lora": [f("adapter_config.json", 1), f("adapter_model.bin", 67), f("README.md", 5)],
    }  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(
        huggingface_hub.HfApi, "model_info", lambda self, repo, revision=None, files_metadata=False: SimpleNamespace(siblings=listing[repo], sha="c" * 40)
    )  # fmt: skip
    cached = {("org/full", "model-00001-of-00002.safetensors")}
    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda repo, name, revision=None: "/x" if (repo, name) in cached else None
    )  # fmt: skip
    assert hub_download_bytes([("org/full", None), ("org/legacy-lora", None)]) == 300 + 67
