"""lvf-pseudoloss / lvf-intervene configs composed with Hydra and run on the tiny model (offline, CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from lora_vs_full.cli._common import CONFIG_DIR
from lora_vs_full.errors import UserError

LINES = [f"Line {i}: the quick brown fox jumps over the lazy dog near the old river bank." for i in range(12)]


def _cfg(name, overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(LINES) + "\n")
    return f


def test_pseudoloss_model_mode_writes_table_and_reuses_parts(tiny_model_dir, text_file, tmp_path):
    from lora_vs_full.cli.pseudoloss import score

    out = tmp_path / "pl"
    over = [
        f"tuned={tiny_model_dir}",
        f"text_file={text_file}",
        f"out={out}",
        "corpus.n_texts=3",
        "scoring.max_length=24",
        f"paths.results_dir={tmp_path}/res",
        "progress=false",
    ]
    df = score(_cfg("pseudoloss", over))
    assert list(df["method"]) == ["base"] and list(df["head"]) == ["pretrained"]
    assert df["n_texts"].iloc[0] == 3 and df["forgetting"].iloc[0] == 0.0
    table = pd.read_csv(out / "pseudoloss.csv")
    assert table["pseudo_loss"].iloc[0] == pytest.approx(df["pseudo_loss"].iloc[0])
    (part,) = (out / "parts").glob("*.json")
    mtime = part.stat().st_mtime_ns
    score(_cfg("pseudoloss", over))  # rerun: the part is up to date, not recomputed
    assert part.stat().st_mtime_ns == mtime


def test_cli_bad_inputs(tiny_model_dir, text_file, tmp_path):
    from lora_vs_full.cli.intervene import intervene
    from lora_vs_full.cli.pseudoloss import score

    with pytest.raises(UserError, match="lambda must be >= 0"):
        intervene(_cfg("intervene", [f"run={tmp_path}", f"out={tmp_path}/iv", "lambdas=[1,-1]"]))
    with pytest.raises(UserError, match="mode='both'"):
        intervene(_cfg("intervene", [f"run={tmp_path}", f"out={tmp_path}/iv", "mode=both"]))
    with pytest.raises(UserError, match="exactly one of runs="):
        score(_cfg("pseudoloss", [f"out={tmp_path}/pl"]))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no usable text"):
        score(_cfg("pseudoloss", [f"tuned={tiny_model_dir}", f"text_file={empty}", f"out={tmp_path}/pl"]))
