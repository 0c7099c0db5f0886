"""Where results live (results/README.md): one function per kind of directory, rooted at ``$LVF_RESULTS``.

    runs/<name>/      lvf-train run directories            (git-ignored)
    cache/            base-SVD cache                        (git-ignored)
    work/<name>/      analysis parquet, scoring parts       (git-ignored)
    tables/<name>/    small exact CSVs + provenance.json    (committed)
    figures/<name>/   PNG + the figure's exact CSV          (committed; PDFs ignored)

``<name>`` is ``<figure>-<preset>``, e.g. ``fig5-offline``. Pure paths: nothing here creates or reads files.
"""

from __future__ import annotations

import os
from pathlib import Path


def results_root() -> Path:
    return Path(os.environ.get("LVF_RESULTS", "results"))


def runs_dir(name: str) -> Path:
    return results_root() / "runs" / name


def work_dir(name: str) -> Path:
    return results_root() / "work" / name


def tables_dir(name: str) -> Path:
    return results_root() / "tables" / name


def figures_dir(name: str) -> Path:
    return results_root() / "figures" / name
