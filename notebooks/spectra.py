# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Spectra of one fine-tuned run
#
# Inspect what `lvf-analyze` found for one run and one weight matrix (arXiv 2410.21228 v1 §3-4):
# singular values before/after fine-tuning, the |cos| similarity matrix of the top singular vectors
# (v1 Fig. 3), which top vectors are intruder dimensions and how large their singular values are, where in
# the network the intruders sit, and the epsilon-sweep curve (v1 Fig. 5) of the run's task.
#
# This notebook only reads an analysis directory and draws with the functions in `experiments/`; it never
# writes the official figures (use `experiments/fig*.py` or `make figures` for those).
# `make notebook` executes it into notebooks/spectra.ipynb; or open it in Jupyter with jupytext installed.

# %% tags=["parameters"]
import os

# The env var wins, so `LVF_ANALYSIS_DIR=<dir> jupyter ...` needs no edit; paths are relative to the repo.
# Default: the committed extract of the offline Fig. 5 reproduction (MiniLM, real weights), so a fresh clone
# shows real spectra without training; point it at results/work/fig5-<preset>/analysis for the full tables.
ANALYSIS_DIR = os.environ.get("LVF_ANALYSIS_DIR", "results/tables/fig5-offline/analysis")
RUN = None  # run id as in intruders.parquet; None = the run with the most intruders at (K, EPS)
MATRIX = None  # canonical matrix id, e.g. "layer3.v"; None = the matrix of RUN with the most intruders
K = 10  # top-k fine-tuned vectors examined (paper: 10)
EPS = 0.5  # intruder threshold on max |cos| (paper: 0.5)
TOP = 50  # singular values shown

# %%
# ruff: noqa: E402  (imports follow the parameter cell, as in any notebook)
import sys
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

import lora_vs_full

# The repository = the directory holding experiments/figstyle.py: above the kernel's working directory
# (Jupyter starts in notebooks/), else beside an editable install of the package.
candidates = [Path.cwd(), *Path.cwd().parents, Path(lora_vs_full.__file__).resolve().parent.parent]
REPO = next((p for p in candidates if (p / "experiments" / "figstyle.py").is_file()), None)
if REPO is None:
    raise FileNotFoundError(
        "run this notebook from inside the lora-vs-full repository (experiments/ not found)"
    )
sys.path.insert(0, str(REPO / "experiments"))

import fig5
import fig_heatmap
import fig_similarity
import fig_spectra
import figdata

analysis_dir = Path(ANALYSIS_DIR)
analysis_dir = analysis_dir if analysis_dir.is_absolute() else REPO / analysis_dir
intruders = figdata.final_only(figdata.load_intruders(analysis_dir))


def show(fig):
    """Display once and close, so the inline backend does not draw it a second time."""
    display(fig)
    plt.close(fig)


# %% [markdown]
# ## Runs in this analysis: intruders at (K, EPS), summed over matrices

# %%
headline = figdata.at_epsilon(figdata.at_k(intruders, K), EPS)
totals = (
    headline.groupby(["run", "task", "method", "rank", "lr", "seed"], dropna=False)["n_intruders"]
    .sum()
    .sort_values(ascending=False)
    .reset_index()
)
display(totals)

# %%
run = RUN or totals["run"].iloc[0]
per_matrix = figdata.pick(headline, "run", run, what="intruders table")
matrix = MATRIX or per_matrix.sort_values(["n_intruders", "layer"], ascending=[False, True])["matrix"].iloc[0]
labels = figdata.run_labels(intruders, [run])
print(f"RUN = {run!r}  ({labels[run]})")
print(f"MATRIX = {matrix!r}")

# %% [markdown]
# ## Singular values before and after (intruders circled)

# %%
spec = fig_spectra.spectra_table(analysis_dir, [run], matrix, top=TOP, k=K, epsilon=EPS)
show(fig_spectra.plot_spectra(spec, labels))

# %% [markdown]
# ## Which top vectors are intruders, and how large are their singular values?
# `max_cos` is the largest |cos| of the fine-tuned vector with ANY pretrained left singular vector;
# `sigma_rank_in_base` says where that singular value would rank in the pretrained spectrum.

# %%
top = spec[spec["index"] < K].copy()
base_sigmas = spec["sigma_base"].to_numpy()
top["sigma_rank_in_base"] = [int((base_sigmas > s).sum()) for s in top["sigma_tuned"]]
display(top[["index", "sigma_tuned", "sigma_base", "sigma_rank_in_base", "max_cos", "intruder"]])
print(f"intruder indices (0-based) in {matrix}: {top.loc[top['intruder'], 'index'].tolist()}")

# %% [markdown]
# ## Similarity matrix, next to a full fine-tune of the same task when there is one

# %%
task = per_matrix["task"].iloc[0]
fulls = totals[(totals["task"] == task) & (totals["method"] == "full")]["run"].tolist()
compare = list(dict.fromkeys([*fulls[:1], run]))  # full FT first; once if RUN is itself full
sim = fig_similarity.similarity_table(analysis_dir, compare, matrix, n=10, k=K, epsilon=EPS)
show(fig_similarity.plot_similarity(sim, figdata.run_labels(intruders, compare)))

# %% [markdown]
# ## Where the intruders sit: layer x module

# %%
heat = fig_heatmap.heatmap_table(intruders, [run], k=K, epsilon=EPS)
show(fig_heatmap.plot_heatmap(heat, labels, k=K, epsilon=EPS))

# %% [markdown]
# ## Intruder count vs epsilon for this task (v1 Fig. 5)

# %%
curves = fig5.fig5_table(intruders, k=K, tasks=[task])
show(fig5.plot_fig5(curves, k=K, epsilon=EPS))
display(fig5.headline(curves, epsilon=EPS))
