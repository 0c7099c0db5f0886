"""Numbers in the docs are read from result files: generated blocks in README.md, docs/*.md, BENCHMARKS.md.

Two markers (HTML comments, invisible on GitHub)::

    <!-- lvf:table results/tables/fig5-offline/headline.csv [cols=a,b,c] [fmt=.3g] [where=col:value] -->
    | generated markdown table |
    <!-- lvf:end -->

    <!-- lvf:value results/tables/fig9-offline/summary.json:r1.forgetting.mean [fmt=.3f] -->1.234<!-- lvf:end -->

``fmt`` formats the cells (a fixed-point ``f`` / ``%`` spec leaves integer cells as integers; a float
column holding only whole numbers and blanks, e.g. LoRA rank beside full FT's blank, is shown as
integers); ``where=col:value`` keeps the rows whose ``col`` reads ``value`` (e.g. ``where=learned:False``).
``python -m lora_vs_full.docs_numbers --write`` (``make docs``) regenerates every block from its file;
without ``--write`` (and in tests/test_docs_numbers.py) it fails when a doc disagrees with the file it
cites, or cites a file that does not exist. Paths are relative to the repository root.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from lora_vs_full.storage import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "BENCHMARKS.md", "docs/*.md", "results/README.md")

_OPTS = r"((?:\s+\w+=\S+)*)"
TABLE = re.compile(r"<!-- lvf:table (\S+)" + _OPTS + r" -->\n(.*?)<!-- lvf:end -->", re.S)
VALUE = re.compile(r"<!-- lvf:value (\S+?):(\S+)" + _OPTS + r" -->(.*?)<!-- lvf:end -->", re.S)


def _opts(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split())


def fmt_value(v, spec: str | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec or ".4g")
    if isinstance(v, int) and spec and spec[-1] not in "f%":  # decimals of a count or seed say nothing
        return format(v, spec)
    return str(v)


def render_table(path: Path, opts: dict[str, str]) -> str:
    import pandas as pd

    df = pd.read_csv(path)
    for c in df.columns:  # whole numbers with blanks: pandas reads them as float; show them as integers
        v = df[c].dropna()
        if df[c].dtype.kind == "f" and df[c].isna().any() and len(v) and (v == v.round()).all():
            df[c] = df[c].astype("Int64")
    if "where" in opts:
        col, _, value = opts["where"].partition(":")
        if col not in df.columns:
            raise KeyError(f"{path} has no column {col!r} (where={opts['where']}); it has {list(df.columns)}")
        df = df[df[col].astype(str) == value]
    if "cols" in opts:
        missing = [c for c in opts["cols"].split(",") if c not in df.columns]
        if missing:
            raise KeyError(f"{path} has no column(s) {missing}; it has {list(df.columns)}")
        df = df[opts["cols"].split(",")]
    spec = opts.get("fmt")
    rows = [
        [fmt_value(None if v is pd.NA else v.item() if hasattr(v, "item") else v, spec) for v in rec]
        for rec in df.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def read_value(path: Path, key: str):
    obj = json.loads(path.read_text())
    for part in key.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            raise KeyError(f"{path} has no key {key!r} (stopped at {part!r})")
    return obj


def _doc_files(root: Path) -> list[Path]:
    out = []
    for pattern in DOCS:
        out += sorted(root.glob(pattern))
    return out


def regenerate(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every block regenerated, and the problems found (missing files, keys)."""
    problems: list[str] = []

    def table(m: re.Match) -> str:
        path, opts = root / m.group(1), _opts(m.group(2))
        try:
            body = render_table(path, opts)
        except (OSError, KeyError, ValueError) as exc:
            problems.append(f"{m.group(1)}: {exc}")
            body = m.group(3)
        return f"<!-- lvf:table {m.group(1)}{m.group(2)} -->\n{body}<!-- lvf:end -->"

    def value(m: re.Match) -> str:
        path, key, opts = root / m.group(1), m.group(2), _opts(m.group(3))
        try:
            body = fmt_value(read_value(path, key), opts.get("fmt"))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            problems.append(f"{m.group(1)}:{key}: {exc}")
            body = m.group(4)
        return f"<!-- lvf:value {m.group(1)}:{key}{m.group(3)} -->{body}<!-- lvf:end -->"

    return VALUE.sub(value, TABLE.sub(table, text)), problems


def check(root: Path = ROOT) -> list[str]:
    """Every disagreement between a doc and the result file it cites (empty when all agree)."""
    problems = []
    for doc in _doc_files(root):
        text = doc.read_text()
        new, found = regenerate(text, root)
        problems += [f"{doc.relative_to(root)}: {p}" for p in found]
        if new != text:
            old_lines, new_lines = text.splitlines(), new.splitlines()
            first = next(
                (i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
                min(len(old_lines), len(new_lines)),
            )
            shown = old_lines[first] if first < len(old_lines) else "<end>"
            problems.append(
                f"{doc.relative_to(root)}:{first + 1}: differs from its result file: {shown[:120]!r}"
            )
    return problems


def write(root: Path = ROOT) -> list[Path]:
    changed = []
    for doc in _doc_files(root):
        text = doc.read_text()
        new, found = regenerate(text, root)
        for p in found:
            print(f"warning: {doc.relative_to(root)}: {p}", file=sys.stderr)
        if new != text:
            atomic_write_text(doc, new)
            changed.append(doc)
    return changed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks (default: check only)")
    args = ap.parse_args(argv)
    if args.write:
        for doc in write():
            print(f"updated {doc.relative_to(ROOT)}")
        return
    problems = check()
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
