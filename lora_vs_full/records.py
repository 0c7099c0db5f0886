"""The tidy result schema shared by analysis, training and figures.

Every table is long format: one row per observation, identifying columns first. Figures and notebooks
read these columns and nothing else, so they are the contract between producers and consumers.
"""

import re

# Columns that identify which fine-tune a row is about (present in every analysis table).
RUN_COLUMNS = ("run", "model", "task", "method", "rank", "alpha", "lr", "seed", "step")

# lvf-analyze -> <out>/intruders.{parquet,csv}: one row per run x matrix x k x epsilon
INTRUDER_COLUMNS = RUN_COLUMNS + ("matrix", "layer", "module", "k", "epsilon", "n_intruders")

# lvf-analyze -> <out>/matrices.{parquet,csv}: one row per run x matrix
MATRIX_COLUMNS = RUN_COLUMNS + (
    "matrix",
    "layer",
    "module",
    "d_out",
    "d_in",
    "erank_delta",  # Roy-Vetterli effective rank of W_t - W_0
    "erank_tuned",  # ... of W_t
    "erank_base",  # ... of W_0
    "delta_fro",  # ||W_t - W_0||_F
    "delta_spectral",  # ||W_t - W_0||_2
    "sigma_base_top",  # JSON list: top-10 singular values of W_0
    "sigma_tuned_top",  # JSON list: top-10 singular values of W_t
)

# Scale metrics written beside the counts (PAPER.md §13: at 4096 dims counts saturate). Optional for
# readers: tables written before they existed lack them, and figures ask for them only when plotted.
INTRUDER_SCALE_COLUMNS = (
    "energy_share",  # share of the top-k tuned energy (sum sigma^2) carried by the intruders, in [0, 1]
    "n_random",  # expected n_intruders if the top-k tuned vectors were random directions
    "nearest_rank",  # mean normalised rank (0 top .. 1 last) of the intruders' nearest pretrained vectors; NaN if none
)
MATRIX_SCALE_COLUMNS = ("cos_floor",)  # 1/sqrt(d_out): the smallest possible max |cos| (PAPER.md §1)

HEADLINE_K = 10
HEADLINE_EPSILON = 0.5

# lvf-analyze -> <out>/spectra/<file_safe(run)>.safetensors: tensors "{matrix}.similarity" (top-N x top-N |cos|,
# rows = tuned vectors, cols = pretrained), "{matrix}.max_cos" (length k_max), "{matrix}.sigma_base",
# "{matrix}.sigma_tuned" (all singular values, descending), "{matrix}.nearest" (length k_max, int64: index of
# each top tuned vector's nearest pretrained vector).
SPECTRA_DIR = "spectra"


def file_safe(run: str) -> str:
    """A run id as a file name: every character outside ``[A-Za-z0-9._-]`` becomes ``_``.

    Producers (analysis) and consumers (figures, notebooks) must both go through this function so
    ``<dir>/spectra/<file_safe(run)>.safetensors`` is found without guessing.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(run))
