"""Held-out pseudo-loss: the probe head never sees a scored line, a RoBERTa base scores with its own head or
fails, paired forgetting intervals, typed lvf-pseudoloss / lvf-intervene configs (offline, CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from lora_vs_full.cli._common import CONFIG_DIR
from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.config import register_configs, validate_intervene
from lora_vs_full.forgetting.corpus import CorpusSpec, check_disjoint, load_fit_texts, load_texts, text_hash
from lora_vs_full.forgetting.mlm_head import ProbeSettings, mlm_head_for, probe_head
from lora_vs_full.forgetting.pseudoloss import encoder_of

LINES = [f"Line {i} says the quick brown fox jumps over the lazy dog again." for i in range(40)]


def _file(tmp_path, lines, name="c.txt"):
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n")
    return str(f)


def test_fit_lines_are_disjoint_from_scored_lines(tmp_path):
    f = _file(tmp_path, LINES)
    scored = load_texts(CorpusSpec(text_file=f, n_texts=10, min_words=4))
    # one file for both: the fit draws from the rest of it
    fit = load_fit_texts(CorpusSpec(text_file=f, n_texts=100, min_words=4, seed=1), scored)
    assert len(fit) == 30 and not {text_hash(t) for t in fit} & {text_hash(t) for t in scored}
    # a second file that repeats some scored lines: they are dropped, never fitted on
    g = _file(
        tmp_path,
        scored[:3] + [f"Another valid line number {i} with enough words." for i in range(5)],
        "v.txt",
    )
    fit2 = load_fit_texts(CorpusSpec(text_file=g, n_texts=100, min_words=4), scored)
    assert len(fit2) == 5
    with pytest.raises(UserError, match="no probe-head fit text is left"):
        load_fit_texts(CorpusSpec(text_file=_file(tmp_path, scored, "s.txt"), min_words=4), scored)


def test_overlap_is_refused_by_the_fit_and_by_a_cached_head(tiny_model_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    with pytest.raises(UserError, match="1 scored line"):
        check_disjoint(LINES[:5], [LINES[4] + "  "])  # whitespace does not hide a shared line
    check_disjoint([text_hash(t) for t in LINES[:5]], LINES[5:])  # hashes or texts, either side
    model, tok = (
        AutoModelForMaskedLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    settings = ProbeSettings(steps=1, batch_size=2, max_length=16)
    kw = dict(base="b", corpus_digest="d", cache_dir=tmp_path, device="cpu")
    with pytest.raises(UserError, match="scored line"):
        probe_head(encoder_of(model), tok, LINES[:6], settings, scored=LINES[5:8], **kw)
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing fitted, nothing cached
    _, info = probe_head(encoder_of(model), tok, LINES[:6], settings, scored=LINES[10:12], **kw)
    assert info["fitted"] and info["n_fit_texts"] == 6
    # the cached head remembers its fit lines: scoring one of them with it fails too
    with pytest.raises(UserError, match="scored line"):
        probe_head(encoder_of(model), tok, LINES[:6], settings, scored=[LINES[0]], **kw)


@pytest.fixture(scope="module")
def headless_roberta(tiny_model_dir, tmp_path_factory):
    """The tiny RoBERTa saved as a bare RobertaModel: an encoder-only export with no lm_head weights."""
    from transformers import AutoModel, AutoTokenizer

    dest = tmp_path_factory.mktemp("models") / "tiny-roberta-headless"
    AutoModel.from_pretrained(tiny_model_dir).save_pretrained(dest)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(dest)
    return dest


def test_roberta_scores_with_its_pretrained_head_or_fails(tiny_model_dir, headless_roberta, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = AutoModel.from_pretrained(tiny_model_dir)
    kw = dict(scored=LINES[:2], corpus_digest="x", cache_dir=tmp_path)
    head, info = mlm_head_for(str(tiny_model_dir), enc, tok, LINES[2:6], ProbeSettings(), **kw)
    assert info["head"] == "pretrained" and type(head).__name__ == "RobertaLMHead"
    with pytest.raises(UserError, match="MLM head did not load.*not substituted"):
        mlm_head_for(str(headless_roberta), enc, tok, LINES[2:6], ProbeSettings(steps=1), **kw)
    assert not list(tmp_path.rglob("*.safetensors"))  # no probe fallback


def test_paired_forgetting_known_answer():
    from lora_vs_full.cli.pseudoloss import paired_forgetting

    base = np.linspace(3.0, 5.0, 50)
    same_shift = paired_forgetting((base + 0.25).tolist(), base.tolist())
    assert (same_shift.mean, same_shift.low, same_shift.high) == pytest.approx((0.25, 0.25, 0.25))
    rng = np.random.default_rng(0)
    d = rng.normal(0.1, 0.2, 400)
    est = paired_forgetting((base.repeat(8) + d).tolist(), base.repeat(8).tolist())
    assert est.mean == pytest.approx(d.mean()) and est.low < est.mean < est.high
    assert est.half_width == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(400), rel=0.15)
    assert est.distinguishable()
    with pytest.raises(UserError, match="same sample"):
        paired_forgetting([1.0, 2.0], [1.0])


def _compose(name, overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_typed_configs_fail_at_compose_time_and_ranges_are_checked():
    cfg = _compose("intervene", [])
    assert list(cfg.lambdas) == [0.1, 0.3, 0.5, 0.7, 0.9, 1.0] and cfg.control_kind == "size_matched"
    validate_intervene(cfg)
    with pytest.raises(ConfigCompositionException):
        _compose("intervene", ["k=ten"])
    with pytest.raises(ConfigCompositionException):
        _compose("pseudoloss", ["corpus.n_txts=5"])
    for bad, msg in (("epsilon=1.5", "epsilon=1.5 must be in"), ("k=0", "k=0 must be >= 1"),
                     ("lambdas=[0.5,-1]", "lambda must be >= 0"), ("control_kind=foo", "control_kind='foo'")):  # fmt: skip
        with pytest.raises(UserError, match=msg):
            validate_intervene(_compose("intervene", [bad]))
