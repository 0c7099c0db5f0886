"""The layout contract: conf/ ships in the wheel, figure modules only draw, no import cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_package_list_covers_every_subpackage():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lora_vs_full").rglob("__init__.py")
    } | {"lora_vs_full.conf"}
    assert listed == found, "edit [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow  # builds a wheel (~10 s)
def test_built_wheel_carries_conf_and_runs_outside_the_repo(tmp_path):
    """`pip install .` (not editable): lvf-train --cfg job works from another directory."""
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w",
         str(tmp_path / "dist")], check=True, env=env, capture_output=True,
    )  # fmt: skip
    wheel = next((tmp_path / "dist").glob("lora_vs_full-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    assert (target / "lora_vs_full/conf/train.yaml").is_file()
    assert (target / "lora_vs_full/conf/reproduce/fig5_offline.yaml").is_file()
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); sys.argv = ['lvf-train', '--cfg', 'job', "
        "'experiment=offline_sst2', 'method=lora', 'method.rank=8']; "
        "import lora_vs_full.cli._common as c; assert c.CONFIG_DIR.startswith(sys.path[0]), c.CONFIG_DIR; "
        "from lora_vs_full.cli.train import main; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "LVF_CONFIG_DIR"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rank: 8" in out.stdout and "name: minilm" in out.stdout


ORCHESTRATION = ("subprocess", "lora_vs_full.runs", "lora_vs_full.training", "lora_vs_full.reproduce",
                 "lora_vs_full.continual.sequence", "lora_vs_full.cli.train")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.py")), ids=lambda p: p.name)
def test_figure_modules_only_draw(path):
    bad = sorted(n for n in _imports(path) if any(n == o or n.startswith(o + ".") for o in ORCHESTRATION))
    assert not bad, f"{path.name} imports orchestration {bad}: move that into lora_vs_full/reproduce/"


def test_no_import_cycles_among_experiments_and_library():
    mods = {}
    for p in [*(ROOT / "lora_vs_full").rglob("*.py"), *(ROOT / "experiments").glob("*.py")]:
        rel = p.relative_to(ROOT).with_suffix("")
        parts = rel.parts[1:] if rel.parts[0] == "experiments" else rel.parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    graph = {m: {n for n in _imports(p) if n in mods and n != m} for m, p in mods.items()}
    # package __init__ re-exports are not cycles of meaning; drop edges into a package from its own children
    graph = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in graph.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, f"import cycles: {cycles[:3]}"
