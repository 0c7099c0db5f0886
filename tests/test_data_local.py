"""Local release-format loaders: tiny files written in each ORIGINAL format, exact text/label output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_vs_full.data import load_task, load_task_with_record
from lora_vs_full.errors import UserError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _rows(ds) -> list[dict]:
    return [dict(r) for r in ds]


def test_sst2_tsv_keeps_stray_quotes(tmp_path):
    # A lone double quote must not swallow the following lines (the default csv dialect would).
    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\n\" it 's great \t1\nawful , just awful \t0\n")
    _write(tmp_path / "SST-2/train.tsv", "sentence\tlabel\na\t0\n")
    assert _rows(load_task("sst2", "eval", data_dir=tmp_path)) == [
        {"text": "\" it 's great", "label": 1},
        {"text": "awful , just awful", "label": 0},
    ]
    # the task folder itself is accepted as data_dir too; the origin names the file read
    ds = load_task("sst2", "train", data_dir=tmp_path / "SST-2", max_samples=1)
    assert len(ds) == 1 and ds.info.description == str(tmp_path / "SST-2/train.tsv")


def test_mnli_glue_tsv_and_jsonl_and_keyed_json(tmp_path):
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    _write(tmp_path / "a/dev_matched.tsv", header + '0\t1\t1e\tfiction\tP "one\tH one\tneutral\tneutral\n'
           "1\t2\t2c\tslate\tP two\tH two\tcontradiction\tcontradiction\n")  # fmt: skip
    assert _rows(load_task("mnli", "eval", data_dir=tmp_path / "a")) == [
        {"text": 'P "one', "text_pair": "H one", "label": 1},
        {"text": "P two", "text_pair": "H two", "label": 2},
    ]
    _jsonl(tmp_path / "b/MNLI/dev.jsonl", [{"premise": "p", "hypothesis": "h", "label": "entailment"}])
    train = {"1": {"text_a": "b", "text_b": "bb", "label": "contradiction"},
             "0": {"text_a": "a", "text_b": "aa", "label": "neutral"}}  # fmt: skip
    _write(tmp_path / "b/MNLI/glue_pretrain_subset/train.json", json.dumps(train))
    assert _rows(load_task("mnli", "eval", data_dir=tmp_path / "b")) == [
        {"text": "p", "text_pair": "h", "label": 0}
    ]
    assert _rows(
        load_task("mnli", "train", data_dir=tmp_path / "b", allow_substitutes=True)
    ) == [  # key order
        {"text": "a", "text_pair": "aa", "label": 1},
        {"text": "b", "text_pair": "bb", "label": 2},
    ]


def test_qqp_tsv_and_subset_fallback(tmp_path, caplog):
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    _write(tmp_path / "QQP/dev.tsv", header + "5\t1\t2\tHow?\tWhy?\t0\n6\t3\t4\tA?\tA!\t1\n")
    assert _rows(load_task("qqp", "eval", data_dir=tmp_path)) == [
        {"text": "How?", "text_pair": "Why?", "label": 0},
        {"text": "A?", "text_pair": "A!", "label": 1},
    ]
    (tmp_path / "QQP/dev.tsv").unlink()
    _write(
        tmp_path / "QQP/glue_pretrain_subset/dev.json",
        json.dumps({"0": {"text_a": "x", "text_b": "y", "label": "1"}}),
    )
    # a held-out TRAIN subset is not the dev set: refused unless substitutes are allowed, then recorded
    with pytest.raises(UserError, match=r"dev\.tsv is absent .* substitute .*task\.allow_substitutes=true"):
        load_task("qqp", "eval", data_dir=tmp_path)
    with caplog.at_level("WARNING"):
        ds, rec = load_task_with_record("qqp", "eval", data_dir=tmp_path, allow_substitutes=True)
        assert _rows(ds) == [{"text": "x", "text_pair": "y", "label": 1}]
    assert "subset of QQP TRAIN" in caplog.text
    assert "instead of dev.tsv (a held-out subset of QQP TRAIN" in rec["substitution"]
    (f,) = rec["files"]
    assert f["path"].endswith("glue_pretrain_subset/dev.json") and len(f["sha256"]) == 64


def test_siqa_template_and_one_based_labels(tmp_path):
    d = tmp_path / "SocialIQa/socialiqa-train-dev"
    _jsonl(
        d / "dev.jsonl",
        [{"context": "Tracy ran.", "question": "Why?", "answerA": "a", "answerB": "b", "answerC": "c"}] * 2,
    )
    _write(d / "dev-labels.lst", "3\n1\n")
    rows = _rows(load_task("siqa", "eval", data_dir=tmp_path))
    expected = ("Please choose the correct answer to the question: Tracy ran. Why?\n\n"
                "Answer1: a Answer2: b Answer3: c\n\nAnswer format: answer1/answer2/answer3")  # fmt: skip
    assert rows == [{"text": expected, "label": 2}, {"text": expected, "label": 0}]


def test_winogrande_template_sizes_and_labels(tmp_path, caplog):
    d = tmp_path / "WinoGrande/winogrande_1.1"
    row = {
        "qID": "q",
        "sentence": "Sarah beat Maria so _ won.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    }
    _jsonl(d / "dev.jsonl", [row])
    _write(d / "dev-labels.lst", "2\n")  # the .lst is authoritative
    expected = ("Please choose the correct answer to fill in the blank to complete the given sentence: "
                "Sarah beat Maria so _ won.\n\nOption1: Sarah Option2: Maria Answer format: option1/option2")  # fmt: skip
    assert _rows(load_task("winogrande", "eval", data_dir=tmp_path)) == [{"text": expected, "label": 1}]
    for size, n in (("xs", 1), ("m", 3)):
        _jsonl(d / f"train_{size}.jsonl", [row] * n)
        _write(d / f"train_{size}-labels.lst", "1\n" * n)
    with pytest.raises(UserError, match=r"train_xl\.jsonl is absent.*allow_substitutes"):
        load_task("winogrande", "train", data_dir=tmp_path)
    ds, rec = load_task_with_record("winogrande", "train", data_dir=tmp_path, allow_substitutes=True)
    assert len(ds) == 3 and "largest size present (m)" in rec["substitution"]  # largest present
    assert [Path(f["path"]).name for f in rec["files"]] == ["train_m.jsonl", "train_m-labels.lst"]
    assert len(load_task("winogrande", "train", data_dir=tmp_path, winogrande_size="xs")) == 1
    with pytest.raises(UserError, match=r"train_l\.jsonl not found.*sizes present: \['xs', 'm'\]"):
        load_task("winogrande", "train", data_dir=tmp_path, winogrande_size="l")


def test_fever_label_order_claim_only_and_dedup(tmp_path):
    rows = [
        {
            "id": 1,
            "verifiable": "VERIFIABLE",
            "label": "SUPPORTS",
            "claim": "A is B.",
            "evidence": [[[1, 2, "A", 0]]],
        },
        {"id": 2, "verifiable": "VERIFIABLE", "label": "REFUTES", "claim": "A is C.", "evidence": []},
        {"id": 1, "verifiable": "VERIFIABLE", "label": "SUPPORTS", "claim": "A is B.", "evidence": []},
        {
            "id": 3,
            "verifiable": "NOT VERIFIABLE",
            "label": "NOT ENOUGH INFO",
            "claim": "A is D.",
            "evidence": [],
        },
    ]
    _jsonl(tmp_path / "FEVER/paper_test.jsonl", rows)
    assert _rows(load_task("fever", "eval", data_dir=tmp_path)) == [
        {"text": "A is B.", "label": 2},
        {"text": "A is C.", "label": 0},
        {"text": "A is D.", "label": 1},
    ]
    with pytest.raises(UserError, match=r"expected train\.jsonl \(substitutes: paper_dev\.jsonl\)"):
        load_task("fever", "train", data_dir=tmp_path)
    _jsonl(tmp_path / "FEVER/paper_dev.jsonl", rows[:2])
    with pytest.raises(UserError, match=r"train\.jsonl is absent"):
        load_task("fever", "train", data_dir=tmp_path)
    assert len(load_task("fever", "train", data_dir=tmp_path, allow_substitutes=True)) == 2


def test_wrong_columns_labels_and_missing_files(tmp_path):
    _write(tmp_path / "SST-2/dev.tsv", "text\tlabel\nx\t1\n")
    with pytest.raises(
        UserError, match=r"dev\.tsv header: expected fields \['sentence', 'label'\].*missing \['sentence'\]"
    ):
        load_task("sst2", "eval", data_dir=tmp_path)
    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\nx\t7\n")
    with pytest.raises(UserError, match=r"dev\.tsv: unexpected sst2 label '7'"):
        load_task("sst2", "eval", data_dir=tmp_path)
    _jsonl(tmp_path / "MNLI/dev.jsonl", [{"sentence1": "p", "sentence2": "h", "label": "neutral"}])
    with pytest.raises(
        UserError, match=r"dev\.jsonl:1: expected fields \['premise', 'hypothesis', 'label'\]"
    ):
        load_task("mnli", "eval", data_dir=tmp_path)
    d = tmp_path / "SocialIQa"
    _jsonl(
        d / "dev.jsonl", [{"context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c"}]
    )
    _write(d / "dev-labels.lst", "1\n2\n")
    with pytest.raises(UserError, match=r"2 labels for 1 rows"):
        load_task("siqa", "eval", data_dir=tmp_path)
    with pytest.raises(
        UserError,
        match=r"no QQP eval file in .*: expected dev\.tsv \(substitutes: glue_pretrain_subset/dev\.json\)",
    ):
        load_task("qqp", "eval", data_dir=tmp_path)
    with pytest.raises(UserError, match="is not a directory"):
        load_task("qqp", "eval", data_dir=tmp_path / "nope")
