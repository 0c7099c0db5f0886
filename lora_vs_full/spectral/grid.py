"""The k x epsilon grid every analysis is evaluated on, and its validation.

One decomposition per matrix yields counts for the whole grid (see :func:`intruders.intruder_counts`), so
the default grid is the full one the figures need: epsilon in 0.00, 0.02, ..., 1.00 (51 values; the
headline 0.5 is in it) and k in 1..50 (headline k = 10, ``records.HEADLINE_K``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from lora_vs_full.errors import UserError

# round() so that 0.5 is exactly 0.5 (i * 0.02 alone gives 0.5000000000000001 for some i).
DEFAULT_EPSILONS: tuple[float, ...] = tuple(round(i * 0.02, 2) for i in range(51))
DEFAULT_KS: tuple[int, ...] = tuple(range(1, 51))


def validate_grid(ks: Iterable[int], epsilons: Iterable[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Check and normalise a grid: returns (sorted unique ks, sorted unique epsilons).

    Sorting and de-duplicating keeps tidy tables free of duplicate rows. Raises ``UserError`` for an empty
    grid, a k that is not an integer >= 1, or an epsilon outside [0, 1] (or NaN).
    """
    ks, epsilons = list(ks), list(epsilons)
    if not ks or not epsilons:
        raise UserError(
            f"empty analysis grid (ks={ks}, epsilons={epsilons}); give at least one k and one epsilon"
        )
    out_ks = []
    for k in ks:
        # bool is an Integral; True as "k = 1" is almost certainly a config mistake.
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise UserError(f"k={k!r} is not a positive integer; use k >= 1 (e.g. ks=[1,...,50])")
        out_ks.append(int(k))
    out_eps = []
    for e in epsilons:
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or math.isnan(e) or not 0.0 <= e <= 1.0:
            raise UserError(
                f"epsilon={e!r} is outside [0, 1]; intruder thresholds are |cos| values in [0, 1]"
            )
        out_eps.append(float(e))
    return tuple(sorted(set(out_ks))), tuple(sorted(set(out_eps)))
