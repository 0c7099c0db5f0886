"""Numbers in README/docs come from committed result files: the generated blocks agree with their files."""

from __future__ import annotations

import json

import pandas as pd

from lora_vs_full import docs_numbers


def test_every_doc_block_agrees_with_its_committed_file():
    problems = docs_numbers.check()
    assert not problems, "\n".join(problems) + "\n(run `make docs` after rerunning the reproduction)"


def _doc(tmp_path, table_body: str, value_body: str):
    (tmp_path / "results").mkdir()
    pd.DataFrame({"run": ["r1", "full"], "acc": [0.80125, 0.79]}).to_csv(
        tmp_path / "results/t.csv", index=False
    )
    (tmp_path / "results/s.json").write_text(json.dumps({"r1": {"forgetting": {"mean": 0.123456}}}))
    doc = tmp_path / "README.md"
    doc.write_text(
        "intro\n<!-- lvf:table results/t.csv fmt=.3f -->\n" + table_body + "<!-- lvf:end -->\n"
        "forgetting <!-- lvf:value results/s.json:r1.forgetting.mean fmt=.2f -->" + value_body
        + "<!-- lvf:end --> nats\n"
    )  # fmt: skip
    return doc


def test_a_typed_number_that_disagrees_is_caught_and_rewritten(tmp_path):
    good_table = "| run | acc |\n|---|---|\n| r1 | 0.801 |\n| full | 0.790 |\n"
    doc = _doc(tmp_path, good_table.replace("0.801", "0.812"), "0.12")
    problems = docs_numbers.check(tmp_path)
    assert len(problems) == 1 and "README.md:5" in problems[0] and "0.812" in problems[0]
    docs_numbers.write(tmp_path)
    assert good_table in doc.read_text() and not docs_numbers.check(tmp_path)


def test_inline_value_and_missing_files_are_reported(tmp_path):
    good_table = "| run | acc |\n|---|---|\n| r1 | 0.801 |\n| full | 0.790 |\n"
    _doc(tmp_path, good_table, "0.13")
    assert any("differs" in p for p in docs_numbers.check(tmp_path))
    (tmp_path / "results/s.json").unlink()
    assert any("s.json" in p for p in docs_numbers.check(tmp_path))


def test_table_where_filter_and_whole_numbers_stay_integers(tmp_path):
    pd.DataFrame({"method": ["full", "lora", "lora"], "rank": [None, 1.0, 64.0], "seed": [0, 1, 2],
                  "gain": [0.1, 0.02, -0.01], "learned": [True, False, False]}).to_csv(tmp_path / "t.csv", index=False)  # fmt: skip
    text = docs_numbers.render_table(tmp_path / "t.csv", {"fmt": ".3f", "where": "learned:False"})
    assert text.splitlines()[2:] == ["| lora | 1 | 1 | 0.020 | no |", "| lora | 64 | 2 | -0.010 | no |"]
    full = docs_numbers.render_table(tmp_path / "t.csv", {"fmt": ".3f"})
    assert "| full | – | 0 | 0.100 | yes |" in full
