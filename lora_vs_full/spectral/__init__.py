"""Pure tensor functions for the spectral analysis: thin SVD (+ the base-SVD cache), intruder dimensions,
similarity matrices, effective rank. Conventions: W is nn.Linear.weight (d_out, d_in); LEFT singular vectors
(columns of U); m_j = max over all pretrained vectors of |cos|; intruder iff m_j < epsilon, top-k tuned."""

from lora_vs_full.spectral.cache import SVDCache, fingerprint
from lora_vs_full.spectral.grid import DEFAULT_EPSILONS, DEFAULT_KS, validate_grid
from lora_vs_full.spectral.intruders import (
    cos_floor,
    intruder_counts,
    intruder_energy_share,
    intruder_mask,
    max_abs_cos,
    nearest_pretrained,
    nearest_rank_mean,
    random_intruder_counts,
    random_intruder_prob,
    similarity_matrix,
)
from lora_vs_full.spectral.matrix import MatrixAnalysis, analyze_matrix
from lora_vs_full.spectral.rank import effective_rank
from lora_vs_full.spectral.svd import SVD, batched_thin_svd, default_device, thin_svd

__all__ = [
    "DEFAULT_EPSILONS",
    "DEFAULT_KS",
    "SVD",
    "MatrixAnalysis",
    "SVDCache",
    "analyze_matrix",
    "batched_thin_svd",
    "cos_floor",
    "default_device",
    "effective_rank",
    "fingerprint",
    "intruder_counts",
    "intruder_energy_share",
    "intruder_mask",
    "max_abs_cos",
    "nearest_pretrained",
    "nearest_rank_mean",
    "random_intruder_counts",
    "random_intruder_prob",
    "similarity_matrix",
    "thin_svd",
    "validate_grid",
]
