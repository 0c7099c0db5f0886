"""notebooks/spectra.py runs top to bottom (jupytext -> nbclient) on a synthetic analysis directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_figures import build_analysis_dir  # noqa: E402  (the planted synthetic analysis dir)


def _stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_spectra_notebook_executes(tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    root, planted = build_analysis_dir(tmp_path / "analysis")
    monkeypatch.setenv("LVF_ANALYSIS_DIR", str(root))  # the kernel inherits the environment
    monkeypatch.delenv("MPLBACKEND", raising=False)

    nb = jupytext.read(REPO / "notebooks" / "spectra.py")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError on any failing cell

    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 4  # spectra, similarity, heat map, eps curve -- each shown exactly once
    text = _stream_text(nb)
    # The default RUN is the run with most intruders: planted r=1 runs have the most.
    run = next(line.split("'")[1] for line in text.splitlines() if line.startswith("RUN = "))
    matrix = next(line.split("'")[1] for line in text.splitlines() if line.startswith("MATRIX = "))
    assert "lora-r1-" in run
    m = planted[run][matrix]
    assert f"intruder indices (0-based) in {matrix}: {[i for i in range(10) if m[i] < 0.5]}" in text


def test_spectra_notebook_opens_with_the_committed_results(monkeypatch):
    """A fresh clone: the default ANALYSIS_DIR is the committed extract of the offline Fig. 5 reproduction."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    extract = REPO / "results" / "tables" / "fig5-offline" / "analysis"
    assert (extract / "intruders.parquet").is_file(), "run `make demo` and commit results/tables/fig5-offline"
    monkeypatch.delenv("LVF_ANALYSIS_DIR", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = jupytext.read(REPO / "notebooks" / "spectra.py")
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    text = _stream_text(nb)
    assert "RUN = 'minilm/" in text and "lora-r1-" in text  # real runs; r = 1 has the most intruders
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 4
