"""Pseudo-loss, MLM heads and the text sample: known answers on the tiny RoBERTa (offline, CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.corpus import CorpusSpec, corpus_digest, detokenize_wikitext, load_texts
from lora_vs_full.forgetting.mlm_head import ProbeSettings, mlm_head_for, pretrained_head, probe_head
from lora_vs_full.forgetting.pseudoloss import encoder_of, pseudo_loss

TEXTS = [
    "The cat sat on the mat and looked out of the window.",
    "Paris is the capital and largest city of France.",
    "He had a guest role in the television series in 2002.",
    "The river flows north through the valley into the sea.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    return AutoModelForMaskedLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def trained_tiny(tiny):
    """The tiny MLM with a sharpened head (LayerNorm gain x30): per-token losses spread far from log V, so a
    wrong position or token shows up in the comparison with the reference loop."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    with torch.no_grad():
        model.lm_head.layer_norm.weight.mul_(30.0)
    return model.eval(), tok


def reference_pseudo_loss(mlm_model, tok, texts, max_length=128):
    """Independent reference: the full MaskedLM model, one masked copy at a time, plain Python loop."""
    total, n = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
            for t in range(1, len(ids) - 1):  # BERT-style tokenizer: [CLS] ... [SEP]
                masked = list(ids)
                masked[t] = tok.mask_token_id
                logits = mlm_model(input_ids=torch.tensor([masked])).logits[0, t]
                total += -float(torch.log_softmax(logits.double(), -1)[ids[t]])
                n += 1
    return total / n, n


def test_pseudo_loss_matches_per_token_loop(trained_tiny):
    model, tok = trained_tiny
    model.train()  # the function must evaluate in eval mode and put this back
    got = pseudo_loss(
        encoder_of(model), model.lm_head, tok, TEXTS, batch_size=5, device="cpu", progress=False
    )
    assert model.training and model.lm_head.training
    model.eval()
    want, n = reference_pseudo_loss(model, tok, TEXTS)
    assert got["n_tokens"] == n and got["n_texts"] == len(TEXTS)
    assert got["mean"] == pytest.approx(want, abs=1e-5)
    # token-weighted mean: per-text means weighted by their token counts give the corpus mean back
    counts = [len(tok(t)["input_ids"]) - 2 for t in TEXTS]
    assert sum(m * c for m, c in zip(got["per_text"], counts, strict=True)) / sum(counts) == pytest.approx(
        got["mean"]
    )
    # chunking does not change the answer
    again = pseudo_loss(
        encoder_of(model), model.lm_head, tok, TEXTS, batch_size=64, device="cpu", progress=False
    )
    assert again["mean"] == pytest.approx(got["mean"], abs=1e-5)
    assert abs(got["mean"] - math.log(tok.vocab_size)) > 1  # not the uniform answer


def test_moving_the_encoder_raises_pseudo_loss(trained_tiny):
    """A 'fine-tune' of the encoder alone (a few Adam steps UP the masked-token loss, head frozen) must
    raise the pseudo-loss measured with the untouched head."""
    model, tok = trained_tiny
    moved = copy.deepcopy(model)
    head = model.lm_head
    params = [p for n, p in encoder_of(moved).named_parameters() if "embeddings" not in n]
    opt = torch.optim.Adam(params, lr=1e-3)
    enc = tok(TEXTS[0], return_tensors="pt")
    ids = enc["input_ids"][0]
    pos = torch.arange(1, len(ids) - 1)
    copies = ids.repeat(len(pos), 1)
    copies[torch.arange(len(pos)), pos] = tok.mask_token_id
    for _ in range(5):
        hidden = encoder_of(moved)(input_ids=copies)[0][torch.arange(len(pos)), pos]
        loss = -torch.nn.functional.cross_entropy(head(hidden), ids[pos])  # ascent
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = pseudo_loss(encoder_of(model), head, tok, TEXTS, progress=False)["mean"]
    after = pseudo_loss(encoder_of(moved), head, tok, TEXTS, progress=False)["mean"]
    assert after > before + 0.1


def test_pretrained_head_found_only_when_the_checkpoint_has_one(tiny_model_dir, minilm_dir):
    head = pretrained_head(str(tiny_model_dir))
    assert head is not None and type(head).__name__ == "RobertaLMHead"
    assert pretrained_head(str(minilm_dir)) is None  # a bare BertModel: the MLM weights would be random


def test_probe_head_cached_and_reused(tiny, tmp_path):
    model, tok = tiny
    settings = ProbeSettings(steps=3, batch_size=2, max_length=32)
    kw = dict(base="some/base", corpus_digest="abc", cache_dir=tmp_path, device="cpu", scored=["other text"])
    head1, info1 = probe_head(encoder_of(model), tok, TEXTS, settings, **kw)
    assert info1["fitted"] and info1["head"] == "probe"
    path = tmp_path / "mlm_probe"
    (file,) = path.glob("base-*.safetensors")
    mtime = file.stat().st_mtime_ns
    head2, info2 = probe_head(encoder_of(model), tok, TEXTS, settings, **kw)
    assert not info2["fitted"] and info2["path"] == str(file) and file.stat().st_mtime_ns == mtime
    h = torch.randn(3, model.config.hidden_size)
    assert torch.equal(head1(h), head2(h))
    # other settings or another corpus -> another file, never a silent reuse
    probe_head(encoder_of(model), tok, TEXTS, ProbeSettings(steps=2, batch_size=2, max_length=32), **kw)
    assert len(list(path.glob("*.safetensors"))) == 2


def test_headless_base_uses_probe_or_refuses(minilm_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    enc, tok = AutoModel.from_pretrained(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir)
    off = ProbeSettings(enabled=False)
    with pytest.raises(UserError, match="no pretrained MLM head.*probe.enabled=true"):
        mlm_head_for(str(minilm_dir), enc, tok, TEXTS, off, scored=[], corpus_digest="x", cache_dir=tmp_path)
    on = ProbeSettings(steps=2, batch_size=2, max_length=24)
    head, info = mlm_head_for(
        str(minilm_dir), enc, tok, TEXTS[1:], on, scored=TEXTS[:1], corpus_digest="x", cache_dir=tmp_path
    )
    assert info["head"] == "probe"
    assert pseudo_loss(enc, head, tok, TEXTS[:1], max_length=24, progress=False)["n_tokens"] > 5


def test_corpus_selection(tmp_path):
    f = tmp_path / "wiki.raw"
    lines = ["", " = Heading = ", ""] + [f" line {i} has well @-@ known words , he said ." for i in range(30)]
    f.write_text("\n".join(lines) + "\n  \n short line\n")
    spec = CorpusSpec(text_file=str(f), n_texts=5, min_words=4, seed=3)
    texts = load_texts(spec)
    assert len(texts) == 5 and all("well-known words, he said." in t for t in texts)
    order = [int(t.split()[1]) for t in texts]
    assert order == sorted(order)  # sampled lines stay in corpus order
    assert (
        load_texts(spec) == texts
        and load_texts(CorpusSpec(text_file=str(f), n_texts=5, min_words=4, seed=4)) != texts
    )
    assert corpus_digest(spec, texts) == corpus_digest(spec, list(texts))
    assert detokenize_wikitext('a " quoted " word ( x ) 1 @,@ 000') == 'a "quoted" word (x) 1,000'


def test_corpus_bad_inputs(tmp_path, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="empty.txt has no usable text"):
        load_texts(CorpusSpec(text_file=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("too short\nalso short\n")
    with pytest.raises(UserError, match="lower min_words"):
        load_texts(CorpusSpec(text_file=str(short)))
    with pytest.raises(UserError, match="does not exist"):
        load_texts(CorpusSpec(text_file=str(tmp_path / "nope.txt")))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="text_file="):
        load_texts(CorpusSpec(hub_id="no-such-org/no-such-dataset-xyz"))


@pytest.mark.shared_data
def test_shared_wikitext_file(shared_raw):
    spec = CorpusSpec(text_file=str(shared_raw / "WikiText/wikitext-2-raw/wiki.test.raw"), n_texts=50)
    texts = load_texts(spec)
    assert len(texts) == 50 and not any(" @-@ " in t or t.startswith("=") for t in texts)
