"""Reading the analysis outputs that figures draw from, with one-line errors for everything missing.

An analysis directory is what ``lvf-analyze`` writes (see ``lora_vs_full/records.py``):
``intruders.parquet`` (run x matrix x k x epsilon), ``matrices.parquet`` (run x matrix) and
``spectra/<file_safe(run)>.safetensors``. Every figure function accepts either such a directory or an
already-loaded DataFrame, so tests and notebooks can pass synthetic tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lora_vs_full import records
from lora_vs_full.data.registry import PAPER_TASK_ORDER
from lora_vs_full.errors import UserError

ANALYZE_HINT = "produce it with: lvf-analyze runs='results/runs/...' out=<dir>"
# Identify one curve (all seeds of one configuration). Seeds are averaged within a curve.
CURVE_COLUMNS = ("model", "task", "method", "rank", "alpha", "lr")
# Canonical module order (encoders, then gated MLPs) for axes and heat-map columns.
MODULE_ORDER = ("q", "k", "v", "o", "fc1", "fc2", "gate", "up", "down")


def read_table(
    source: str | Path | pd.DataFrame, stem: str, columns: tuple[str, ...], hint: str = ANALYZE_HINT
) -> pd.DataFrame:
    """``<source>/<stem>.parquet`` (or ``.csv``, or a DataFrame) with ``columns`` and at least one row.

    Any problem is a one-line UserError ending in ``hint`` (the command that produces the table).
    """
    if isinstance(source, pd.DataFrame):
        df, where = source, f"the {stem} table"
    else:
        root = Path(source)
        pq, csv = root / f"{stem}.parquet", root / f"{stem}.csv"
        if pq.is_file():
            df, where = pd.read_parquet(pq), str(pq)
        elif csv.is_file():
            df, where = pd.read_csv(csv), str(csv)
        elif not root.is_dir():
            raise UserError(f"directory {root} does not exist; {hint}")
        else:
            raise UserError(f"{pq} not found; {hint}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{where} lacks columns {missing}; regenerate it ({hint})")
    if df.empty:
        raise UserError(f"{where} has no rows; {hint}")
    return df


def load_intruders(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """``intruders`` table (columns ``records.INTRUDER_COLUMNS``), validated."""
    return read_table(source, "intruders", records.INTRUDER_COLUMNS)


def load_matrices(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """``matrices`` table (columns ``records.MATRIX_COLUMNS``), validated."""
    return read_table(source, "matrices", records.MATRIX_COLUMNS)


def final_only(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of final checkpoints (``step`` is NA); intermediate checkpoints belong to evolution plots."""
    out = df[df["step"].isna()]
    if out.empty:
        raise UserError("the table holds only intermediate checkpoints (step not NA); analyse final runs")
    return out


def pick(df: pd.DataFrame, column: str, values, *, what: str = "table") -> pd.DataFrame:
    """Rows whose ``column`` is in ``values`` (one value or a list); an absent value is a UserError."""
    if values is None:
        return df
    values = [values] if isinstance(values, (str, int, float)) else list(values)
    have = df[column].dropna().unique().tolist()
    absent = [v for v in values if v not in have]
    if absent:
        raise UserError(f"{column} {absent} not in the {what}; available: {sorted(map(str, have))}")
    return df[df[column].isin(values)]


def at_epsilon(df: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """Rows at ``epsilon`` (tolerant to float round-off in the stored grid)."""
    mask = np.isclose(df["epsilon"].astype(float), float(epsilon), atol=1e-9)
    if not mask.any():
        grid = sorted(df["epsilon"].astype(float).round(4).unique().tolist())
        raise UserError(f"epsilon={epsilon} is not on the analysed grid {grid[:3]}...{grid[-2:]}")
    return df[mask]


def at_k(df: pd.DataFrame, k: int) -> pd.DataFrame:
    out = df[df["k"] == int(k)]
    if out.empty:
        raise UserError(f"k={k} not analysed; available k: {sorted(df['k'].unique().tolist())}")
    return out


def check_one_run_per_seed(df: pd.DataFrame) -> None:
    """Seeds are averaged within a curve: two runs with the same curve *and* seed would be mixed silently."""
    runs = df[[*CURVE_COLUMNS, "seed", "run"]].drop_duplicates()
    dup = runs[runs.duplicated([*CURVE_COLUMNS, "seed"], keep=False)]
    if not dup.empty:
        raise UserError(
            f"runs {sorted(dup['run'].unique().tolist())[:4]} share model/task/method/rank/alpha/lr/seed "
            "(different targets?); pass runs=[...] to plot one of them"
        )


def curve_order(curves: pd.DataFrame) -> pd.DataFrame:
    """Sort curves as in the paper's legends: LoRA by rank ascending, full FT last."""
    key = curves["rank"].astype("Float64").fillna(np.inf).where(curves["method"] != "full", np.inf)
    return curves.assign(_o=key.astype(float)).sort_values(["_o", "lr"]).drop(columns="_o")


def spectra_path(analysis_dir: str | Path, run: str, step: int | None = None) -> Path:
    """``<dir>/spectra/<file_safe(name)>.safetensors``; ``name`` is ``run`` or ``<run>@step-<n>`` (as
    ``lora_vs_full.analysis`` names intermediate checkpoints)."""
    name = run if step is None else f"{run}@step-{int(step)}"
    return Path(analysis_dir) / records.SPECTRA_DIR / f"{records.file_safe(name)}.safetensors"


def load_spectra(
    analysis_dir: str | Path, run: str, matrix: str, *, step: int | None = None
) -> dict[str, np.ndarray]:
    """The stored spectra of one run/matrix (final checkpoint, or ``step``) as float64 numpy arrays.

    Keys: ``similarity`` (N x N |cos|, rows = tuned vectors, cols = pretrained), ``max_cos`` (k_max,
    max |cos| of each top tuned vector over ALL pretrained vectors), ``sigma_base``, ``sigma_tuned``
    (all singular values, descending).
    """
    from safetensors.numpy import load_file

    path = spectra_path(analysis_dir, run, step)
    if not path.is_file():
        at = "" if step is None else f" at step {step}"
        raise UserError(f"no spectra for run {run!r}{at} ({path} missing); {ANALYZE_HINT}")
    tensors = load_file(str(path))
    names = ("similarity", "max_cos", "sigma_base", "sigma_tuned")
    if f"{matrix}.similarity" not in tensors:
        have = sorted({k.rsplit(".", 1)[0] for k in tensors})
        raise UserError(f"matrix {matrix!r} not in {path.name}; available: {have[:12]}")
    absent = [n for n in names if f"{matrix}.{n}" not in tensors]
    if absent:
        raise UserError(f"{path} lacks {[f'{matrix}.{n}' for n in absent]}; re-run lvf-analyze")
    return {n: tensors[f"{matrix}.{n}"].astype(np.float64) for n in names}


def run_labels(table: pd.DataFrame | None, runs: list[str]) -> dict[str, str]:
    """Short panel titles (``full FT``, ``LoRA r=8``, + task) from a table's run columns, else the run id."""
    if table is None:
        return {r: r for r in runs}
    info = table.drop_duplicates("run").set_index("run")
    labels = {}
    for r in runs:
        if r not in info.index:
            labels[r] = r
            continue
        row = info.loc[r]
        method = "full FT" if row["method"] == "full" else f"LoRA r={int(row['rank'])}"
        labels[r] = f"{row['task']}: {method}"
    # Two runs with the same label (e.g. two seeds) get their seed appended.
    values = list(labels.values())
    shared = {lab for lab in values if values.count(lab) > 1}
    for r in runs:
        if labels[r] in shared and r in info.index:
            labels[r] = f"{labels[r]} (seed {info.loc[r, 'seed']})"
    return labels


def add_curve_labels(curves: pd.DataFrame) -> pd.DataFrame:
    """Add a ``label`` column naming each curve (``LoRA r=8``, ``full FT``) for legends and CSVs.

    When one model/method/rank has several (alpha, lr) configurations anywhere in the table, the label
    carries them so the curves stay distinguishable (e.g. the offline preset's r = 1 learning-rate sweep);
    deciding over the whole table, not per task, keeps one label per configuration across panels.
    """
    out = curves.copy()
    cfg = out[["model", "method", "rank", "alpha", "lr"]].drop_duplicates()
    n_cfg = cfg.groupby(["model", "method", "rank"], dropna=False).size().rename("_n").reset_index()
    out = out.merge(n_cfg, on=["model", "method", "rank"], how="left")

    def label(row) -> str:
        base = "full FT" if row["method"] == "full" else f"LoRA r={int(row['rank'])}"
        if row["_n"] <= 1:
            return base
        extra = [f"lr={row['lr']:g}"]
        if row["method"] != "full" and not pd.isna(row["alpha"]):
            extra.insert(0, f"α={row['alpha']:g}")
        return f"{base} ({', '.join(extra)})"

    out["label"] = out.apply(label, axis=1)
    return out.drop(columns="_n")


# The paper's task order (v1 Table/Fig. 5; its home is the data registry); other tasks follow alphabetically.


def sort_panels(df: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by model, then task in the paper's order, keeping the row order within a task."""
    known = {t: i for i, t in enumerate(PAPER_TASK_ORDER)}
    key = df["task"].map(lambda t: (known.get(str(t).lower(), len(known)), str(t)))
    return df.assign(_t=key).sort_values(["model", "_t"], kind="stable").drop(columns="_t")


def panel_names(df: pd.DataFrame) -> pd.Series:
    """Panel title per row: the task, prefixed by the model when the table mixes models."""
    if df["model"].nunique() > 1:
        return df["model"].astype(str) + " / " + df["task"].astype(str)
    return df["task"].astype(str)


def runs_for(
    table: pd.DataFrame, task: str, ranks=(1, 8), *, full: bool = True, seed: int | None = None
) -> list[str]:
    """Run ids for a side-by-side figure: full FT (if ``full``) then LoRA at each of ``ranks`` for ``task``.

    Takes the lowest seed (or ``seed``) of each; a missing task/rank/seed is a UserError listing what exists.
    """
    df = final_only(pick(table, "task", task, what="table"))
    if seed is not None:
        df = pick(df, "seed", int(seed), what=f"table for task {task}")
    wanted = ([("full", None)] if full else []) + [("lora", int(r)) for r in ranks]
    out = []
    for method, rank in wanted:
        sel = df[(df["method"] == method) & (df["rank"].isna() if rank is None else (df["rank"] == rank))]
        if sel.empty:
            have = sorted(
                {
                    ("full" if m == "full" else f"r={int(r)}")
                    for m, r in zip(df["method"], df["rank"], strict=True)
                }
            )
            what = "full FT" if rank is None else f"LoRA r={rank}"
            raise UserError(f"no {what} run for task {task!r}; available: {have}")
        out.append(sel.sort_values(["seed", "run"])["run"].iloc[0])
    return out
