"""Figure scripts on a synthetic analysis directory with planted answers.

The synthetic directory mimics ``lvf-analyze``'s output: per run x matrix we plant the top-10 max |cos|
values, derive ``n_intruders`` for every (k, epsilon) from them, and write matching spectra files. The
expected Fig. 5 numbers are recomputed here straight from the planted arrays (not from the table), so a
wrong groupby/sum/mean in the figure code cannot agree by construction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lora_vs_full import records
from lora_vs_full.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig5  # noqa: E402
import fig_erank  # noqa: E402
import fig_heatmap  # noqa: E402
import fig_similarity  # noqa: E402
import fig_spectra  # noqa: E402

MODULES = ("q", "k", "v", "o", "fc1", "fc2")
LAYERS = 2
EPSILONS = np.round(np.arange(0, 51) * 0.02, 2)
N_TOP = 10  # k_max and the side of the stored similarity block
D = 32  # all synthetic matrices are D x D


def _configs():
    """(task, method, rank, seed) of every synthetic run: r=1 has two seeds to exercise averaging."""
    out = []
    for task in ("sst2", "mnli"):
        out.append((task, "full", None, 0))
        out += [(task, "lora", 1, 0), (task, "lora", 1, 1), (task, "lora", 8, 0), (task, "lora", 64, 0)]
    return out


def _run_id(task, method, rank, seed):
    tag = "full" if method == "full" else f"lora-r{rank}-a{2 * rank}-all_linear"
    return f"tiny/{task}/{tag}/seed{seed}"


def _planted_max_cos(rng, method, rank):
    """Top-10 max |cos|: full FT all high; LoRA has about 4/rank-ish low ones (more intruders at low rank)."""
    m = rng.uniform(0.75, 1.0, N_TOP)
    if method == "lora":
        n_low = {1: 4, 8: 2, 64: 0}[rank] + int(rng.integers(0, 2))
        idx = rng.choice(N_TOP, size=n_low, replace=False)
        m[idx] = rng.uniform(0.05, 0.45, n_low)
    return m


def build_analysis_dir(root: Path, seed: int = 0) -> tuple[Path, dict]:
    """Write intruders/matrices parquet + spectra; return (dir, planted {run: {matrix: max_cos}})."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    planted, irows, mrows = {}, [], []
    for task, method, rank, s in _configs():
        run = _run_id(task, method, rank, s)
        ident = dict(
            run=run,
            model="tiny",
            task=task,
            method=method,
            rank=rank,
            alpha=None if rank is None else 2.0 * rank,
            lr=1e-5 if rank is None else 1.2e-3 / rank,
            seed=s,
            step=None,
        )
        planted[run], tensors = {}, {}
        for layer in range(LAYERS):
            for module in MODULES:
                matrix = f"layer{layer}.{module}"
                m = _planted_max_cos(rng, method, rank)
                planted[run][matrix] = m
                for k in (5, 10):
                    for eps in EPSILONS:
                        n = int((m[:k] < eps).sum())
                        irows.append(
                            {
                                **ident,
                                "matrix": matrix,
                                "layer": layer,
                                "module": module,
                                "k": k,
                                "epsilon": eps,
                                "n_intruders": n,
                            }
                        )
                # Similarity block: the diagonal carries the planted max |cos|, off-diagonals stay below it.
                sim = rng.uniform(0, 0.04, (N_TOP, N_TOP))
                sim[np.arange(N_TOP), np.arange(N_TOP)] = m
                sigma_base = np.sort(rng.uniform(0.5, 3.0, D))[::-1]
                sigma_tuned = sigma_base * rng.uniform(0.98, 1.02, D)
                sigma_tuned = np.sort(sigma_tuned)[::-1]
                tensors.update(
                    {
                        f"{matrix}.similarity": sim.astype(np.float32),
                        f"{matrix}.max_cos": m.astype(np.float32),
                        f"{matrix}.sigma_base": sigma_base.astype(np.float32),
                        f"{matrix}.sigma_tuned": sigma_tuned.astype(np.float32),
                    }
                )
                erank = 300.0 + layer if method == "full" else float(rank) * 0.9 + 0.1 * layer
                mrows.append(
                    {
                        **ident,
                        "matrix": matrix,
                        "layer": layer,
                        "module": module,
                        "d_out": D,
                        "d_in": D,
                        "erank_delta": erank,
                        "erank_tuned": 20.0,
                        "erank_base": 20.0,
                        "delta_fro": 0.1,
                        "delta_spectral": 0.05,
                        "sigma_base_top": str(sigma_base[:10].tolist()),
                        "sigma_tuned_top": str(sigma_tuned[:10].tolist()),
                    }
                )
        spectra = root / records.SPECTRA_DIR
        spectra.mkdir(exist_ok=True)
        save_file(tensors, str(spectra / f"{records.file_safe(run)}.safetensors"))
    for rows, stem in ((irows, "intruders"), (mrows, "matrices")):
        df = pd.DataFrame(rows)
        df["rank"] = df["rank"].astype("Int64")
        df["step"] = df["step"].astype("Int64")
        df.to_parquet(root / f"{stem}.parquet", index=False)
    return root, planted


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return build_analysis_dir(tmp_path_factory.mktemp("analysis") / "an")


def _expected_fig5(planted, k=10):
    """Independent reference: per run sum over matrices of (max_cos[:k] < eps), then mean over seeds."""
    per_curve: dict[tuple, list[np.ndarray]] = {}
    for task, method, rank, s in _configs():
        counts = sum(
            (m[:k, None] < EPSILONS[None, :]).sum(0) for m in planted[_run_id(task, method, rank, s)].values()
        )
        per_curve.setdefault((task, method, rank), []).append(counts)
    return {key: (np.mean(v, 0), len(v)) for key, v in per_curve.items()}


def _assert_written(paths, stem):
    names = {p.name for p in paths}
    for ext in ("pdf", "png", "csv"):
        assert f"{stem}.{ext}" in names
    for p in paths:
        assert p.stat().st_size > 0


def test_fig5_csv_equals_independent_sums(analysis, tmp_path):
    root, planted = analysis
    paths = fig5.make_fig5(root, tmp_path)
    _assert_written(paths, "fig5")
    csv = pd.read_csv(tmp_path / "fig5.csv")
    expected = _expected_fig5(planted)
    assert len(csv) == len(expected) * len(EPSILONS)
    for (task, method, rank), (counts, n_seeds) in expected.items():
        sel = (csv["task"] == task) & (csv["method"] == method)
        sel &= csv["rank"].isna() if rank is None else (csv["rank"] == rank)
        got = csv[sel].sort_values("epsilon")
        np.testing.assert_allclose(got["epsilon"], EPSILONS)
        np.testing.assert_allclose(got["n_intruders"], counts)
        assert (got["n_seeds"] == n_seeds).all()
        assert (got["n_matrices"] == LAYERS * len(MODULES)).all()
    # The planted structure shows up: r=1 has intruders at 0.5, full FT none.
    head = pd.read_csv(tmp_path / "fig5_headline.csv").set_index("task")
    assert list(head.columns) == ["LoRA r=1", "LoRA r=8", "LoRA r=64", "full FT"]
    for task in ("sst2", "mnli"):
        assert head.loc[task, "full FT"] == 0
        assert head.loc[task, "LoRA r=1"] == pytest.approx(_expected_fig5(planted)[(task, "lora", 1)][0][25])
        assert head.loc[task, "LoRA r=1"] > head.loc[task, "LoRA r=8"] > 0


def test_fig5_metadata_names_paper_figure(analysis, tmp_path):
    from PIL import Image

    paths = fig5.make_fig5(analysis[0], tmp_path, tasks=["sst2"])
    png = Image.open(next(p for p in paths if p.suffix == ".png"))
    assert "v1 Fig. 5" in png.text["Description"] and "2410.21228" in png.text["Description"]
    pdf = next(p for p in paths if p.suffix == ".pdf").read_bytes()
    assert b"v1 Fig. 5" in pdf
    assert set(pd.read_csv(tmp_path / "fig5.csv")["task"]) == {"sst2"}


def test_fig5_bad_inputs(analysis, tmp_path):
    root, _ = analysis
    df = pd.read_parquet(root / "intruders.parquet")
    with pytest.raises(UserError, match="no rows"):
        fig5.make_fig5(df.iloc[:0], tmp_path)
    with pytest.raises(UserError, match="n_intruders"):
        fig5.make_fig5(df.drop(columns="n_intruders"), tmp_path)
    with pytest.raises(UserError, match="qqp"):
        fig5.make_fig5(root, tmp_path, tasks=["qqp"])
    with pytest.raises(UserError, match="lvf-analyze"):
        fig5.make_fig5(tmp_path / "nowhere", tmp_path)
    with pytest.raises(UserError, match="k=3"):
        fig5.make_fig5(root, tmp_path, k=3)
    # Two runs of one configuration+seed (e.g. different targets) must not be averaged silently.
    twin = df[df["run"] == _run_id("sst2", "lora", 8, 0)].assign(run="tiny/sst2/lora-r8-qv/seed0")
    with pytest.raises(UserError, match="share"):
        fig5.make_fig5(pd.concat([df, twin]), tmp_path)


def test_fig5_main_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        fig5.main([str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_similarity_grid_marks_planted_intruders(analysis, tmp_path):
    root, planted = analysis
    runs = [_run_id("sst2", m, r, 0) for m, r in (("full", None), ("lora", 1), ("lora", 8))]
    paths = fig_similarity.make_similarity(root, runs, "layer1.v", tmp_path, epsilon=0.5)
    _assert_written(paths, "similarity_layer1.v")
    csv = pd.read_csv(tmp_path / "similarity_layer1.v.csv")
    assert len(csv) == len(runs) * N_TOP * N_TOP
    for run in runs:
        sub = csv[csv["run"] == run]
        m = planted[run]["layer1.v"]
        flags = sub.drop_duplicates("tuned_index").sort_values("tuned_index")["intruder"].to_numpy()
        np.testing.assert_array_equal(flags, m[:N_TOP] < 0.5)
        diag = sub[sub["tuned_index"] == sub["pretrained_index"]].sort_values("tuned_index")
        np.testing.assert_allclose(diag["abs_cos"], m, rtol=1e-6)
    with pytest.raises(UserError, match="layer9.q"):
        fig_similarity.make_similarity(root, runs, "layer9.q", tmp_path)
    with pytest.raises(UserError, match="no spectra"):
        fig_similarity.make_similarity(root, ["tiny/sst2/none/seed0"], "layer0.q", tmp_path)


def test_heatmap_counts_per_layer_module(analysis, tmp_path):
    root, planted = analysis
    run = _run_id("mnli", "lora", 1, 1)
    paths = fig_heatmap.make_heatmap(root, [run], tmp_path)
    _assert_written(paths, "heatmap")
    csv = pd.read_csv(tmp_path / "heatmap.csv")
    assert len(csv) == LAYERS * len(MODULES)
    for _, row in csv.iterrows():
        assert row["n_intruders"] == int(
            (planted[run][f"layer{row['layer']}.{row['module']}"][:10] < 0.5).sum()
        )
    with pytest.raises(UserError, match="nope"):
        fig_heatmap.make_heatmap(root, ["nope"], tmp_path)


def test_spectra_plot_numbers(analysis, tmp_path):
    root, _ = analysis
    run = _run_id("sst2", "lora", 1, 0)
    paths = fig_spectra.make_spectra(root, [run], "layer0.fc1", tmp_path, top=50)
    _assert_written(paths, "spectra_layer0.fc1")
    csv = pd.read_csv(tmp_path / "spectra_layer0.fc1.csv")
    from safetensors.numpy import load_file

    t = load_file(str(root / records.SPECTRA_DIR / f"{records.file_safe(run)}.safetensors"))
    assert len(csv) == D  # top=50 capped at the D singular values that exist
    np.testing.assert_allclose(csv["sigma_base"], t["layer0.fc1.sigma_base"], rtol=1e-6)
    np.testing.assert_allclose(csv["sigma_tuned"], t["layer0.fc1.sigma_tuned"], rtol=1e-6)


def test_erank_mean_over_modules(analysis, tmp_path):
    root, _ = analysis
    paths = fig_erank.make_erank(root, tmp_path)
    _assert_written(paths, "erank")
    csv = pd.read_csv(tmp_path / "erank.csv")
    mat = pd.read_parquet(root / "matrices.parquet")
    for (task, method, rank, layer), grp in mat.groupby(["task", "method", "rank", "layer"], dropna=False):
        sel = (csv["task"] == task) & (csv["method"] == method) & (csv["layer"] == layer)
        sel &= csv["rank"].isna() if pd.isna(rank) else (csv["rank"] == rank)
        assert csv.loc[sel, "erank_delta"].item() == pytest.approx(grp["erank_delta"].mean())
    with pytest.raises(UserError, match="erank_delta"):
        fig_erank.make_erank(mat.drop(columns="erank_delta"), tmp_path)


def test_figures_read_what_lvf_analyze_writes(tiny_model_dir, tmp_path):
    """Contract test with the real producer: a planted rank-1 spike per matrix is exactly one intruder."""
    import torch

    from lora_vs_full.spectral import SVDCache

    # One thread: on a shared 2-core machine, 2-thread SVDs of these tiny matrices are ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _analyze_two_runs(tiny_model_dir, tmp_path, SVDCache(None))
    finally:
        torch.set_num_threads(threads)
    out, runs = (
        tmp_path / "an",
        {"full": "tiny/synth/full/seed0", "lora": "tiny/synth/lora-r1-a2-all_linear/seed0"},
    )
    n_matrices = pd.read_parquet(out / "matrices.parquet")["matrix"].nunique()
    fig5.make_fig5(out, tmp_path / "fig")
    head = pd.read_csv(tmp_path / "fig" / "fig5_headline.csv").set_index("task")
    assert head.loc["synth", "LoRA r=1"] == n_matrices and head.loc["synth", "full FT"] == 0
    fig_similarity.make_similarity(out, list(runs.values()), "layer1.fc1", tmp_path / "fig")
    sim = pd.read_csv(tmp_path / "fig" / "similarity_layer1.fc1.csv")
    flagged = sim[sim["intruder"]].groupby("run")["tuned_index"].unique()
    assert runs["full"] not in flagged and flagged[runs["lora"]].tolist() == [
        0
    ]  # the spike is the top vector
    # matrices.parquet side of the contract (spectra/heat map read the same files as above).
    fig_erank.make_erank(out, tmp_path / "fig")
    erank = pd.read_csv(tmp_path / "fig" / "erank.csv")
    assert (
        erank.loc[erank["method"] == "lora", "erank_delta"]
        < erank.loc[erank["method"] == "full", "erank_delta"].min()
    ).all()


def _analyze_two_runs(tiny_model_dir, tmp_path, cache):
    """lvf-analyze's layout for a near-copy ("full") and a rank-1 spike of norm 3 on every matrix ("lora")."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from lora_vs_full.analysis import analyze_pair, write_analysis
    from lora_vs_full.weights import open_pair

    out = tmp_path / "an"
    for tag, spike in (("full", 0.0), ("lora-r1-a2-all_linear", 3.0)):
        tuned = tmp_path / tag
        shutil.copytree(tiny_model_dir, tuned)
        sd = load_file(str(tuned / "model.safetensors"))
        g = torch.Generator().manual_seed(1)
        for key, w in sd.items():
            if w.ndim == 2 and ".encoder." in f".{key}":
                u, v = torch.randn(w.shape[0], generator=g), torch.randn(w.shape[1], generator=g)
                sd[key] = (
                    w
                    + 1e-4 * torch.randn(w.shape, generator=g)
                    + spike * torch.outer(u / u.norm(), v / v.norm())
                )
        save_file(sd, str(tuned / "model.safetensors"), metadata={"format": "pt"})
        lora = tag != "full"
        meta = dict(run=f"tiny/synth/{tag}/seed0", model="tiny", task="synth", method="lora" if lora else "full",
                    rank=1 if lora else None, alpha=2.0 if lora else None, lr=1e-5, seed=0, step=None)  # fmt: skip
        pair = open_pair(str(tiny_model_dir), str(tuned))
        res = analyze_pair(*pair, run_meta=meta, progress=False, sim_n=10, cache=cache)
        write_analysis(res, out / "parts" / tag, spectra_dir=out / records.SPECTRA_DIR)
    for stem in ("intruders", "matrices"):
        pd.concat([pd.read_parquet(p / f"{stem}.parquet") for p in (out / "parts").iterdir()]).to_parquet(
            out / f"{stem}.parquet"
        )


def test_runs_for_picks_full_then_ranks(analysis):
    import figdata

    table = pd.read_parquet(analysis[0] / "intruders.parquet")
    got = figdata.runs_for(table, "mnli", [1, 8])
    assert got == [
        _run_id("mnli", "full", None, 0),
        _run_id("mnli", "lora", 1, 0),
        _run_id("mnli", "lora", 8, 0),
    ]
    assert figdata.runs_for(table, "sst2", [1], full=False, seed=1) == [_run_id("sst2", "lora", 1, 1)]
    with pytest.raises(UserError, match="r=16"):
        figdata.runs_for(table, "sst2", [16])
