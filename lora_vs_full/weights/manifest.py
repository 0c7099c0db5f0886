"""A manifest: which fine-tunes of which base ``lvf-analyze manifest=<file>`` analyses, in one pass per base.

YAML or JSON. Either one group at the top level or a list of ``groups`` (each analysed in its own pass, one
base at a time, so only one base's files need to be on disk at once)::

    groups:
      - base: meta-llama/Llama-2-7b-hf          # local dir or Hub id
        base_revision: null
        model: llama-2-7b                        # the `model` column of every row of the group
        fine_tunes:
          - LoRA-TMLR-2024/metamath-lora-rank-16-alpha-32          # a bare id (label = the id)
          - {id: LoRA-TMLR-2024/metamath-full-finetuning-lr-1e-05, task: metamath, label: metamath-full}

Per fine-tune keys: ``id`` (required: dir, Hub id, adapter dir or lvf-train run dir), ``revision``,
``label`` (the ``run`` column; default the id), ``task``, ``lr``, ``seed``, ``note`` (ignored). ``method``,
``rank`` and ``alpha`` are refused: they are read from each adapter's own ``adapter_config.json`` (a model
directory is ``method=full``), so a table never disagrees with the weights it describes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lora_vs_full.errors import UserError

_GROUP_KEYS = {"base", "base_revision", "model", "fine_tunes", "note"}
_TUNED_KEYS = {"id", "revision", "label", "task", "lr", "seed", "note"}
_FROM_CONFIG = {"method", "rank", "alpha", "r", "lora_alpha"}


@dataclass(frozen=True)
class FineTune:
    spec: str
    revision: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict)  # explicit run columns: model, task, lr, seed

    @property
    def name(self) -> str:
        return self.label or self.spec


@dataclass(frozen=True)
class Group:
    base: str
    base_revision: str | None
    fine_tunes: tuple[FineTune, ...]


def _load(path: Path):
    if not path.is_file():
        raise UserError(f"manifest={path} does not exist; pass a YAML or JSON manifest file")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (json.JSONDecodeError, Exception) as exc:  # yaml.YAMLError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"manifest {path} does not parse ({first}); fix its syntax") from None


def _fine_tune(item, where: str, model: str | None) -> FineTune:
    if isinstance(item, str):
        item = {"id": item}
    if not isinstance(item, dict) or not item.get("id"):
        raise UserError(f"{where}: each fine-tune is an id or a mapping with id: ...; got {item!r}")
    typed_by_hand = sorted(set(item) & _FROM_CONFIG)
    if typed_by_hand:
        raise UserError(
            f"{where}: {item['id']} sets {', '.join(typed_by_hand)}; remove it -- method, rank and alpha are "
            "read from the adapter's adapter_config.json (a model directory is method=full)"
        )
    unknown = sorted(set(item) - _TUNED_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {item['id']}; allowed: {sorted(_TUNED_KEYS)}"
        )
    meta = {k: item[k] for k in ("task", "lr", "seed") if item.get(k) is not None}
    if model is not None:
        meta["model"] = model
    label = item.get("label")
    return FineTune(str(item["id"]), item.get("revision"), None if label is None else str(label), meta)


def groups_from(data, where: str, *, model: str | None = None, task: str | None = None) -> list[Group]:
    """Validate a parsed manifest (dict) into groups; ``model``/``task`` fill columns the manifest leaves out."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping with base + fine_tunes, or groups: [...]")
    raw_groups = data["groups"] if "groups" in data else [data]
    if not isinstance(raw_groups, list) or not raw_groups:
        raise UserError(f"{where}: groups must be a non-empty list")
    out, names = [], []
    for gi, g in enumerate(raw_groups):
        gw = f"{where} group {gi + 1}"
        if not isinstance(g, dict):
            raise UserError(f"{gw} must be a mapping with base and fine_tunes")
        unknown = sorted(set(g) - _GROUP_KEYS)
        if unknown:
            raise UserError(f"{gw}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(_GROUP_KEYS)}")
        if not g.get("base") or not g.get("fine_tunes"):
            raise UserError(f"{gw} needs base: <model> and a non-empty fine_tunes: [...]")
        fts = []
        for item in g["fine_tunes"]:
            ft = _fine_tune(item, gw, g.get("model", model))
            if task is not None and "task" not in ft.meta:
                ft.meta["task"] = task
            fts.append(ft)
        names += [ft.name for ft in fts]
        out.append(Group(str(g["base"]), g.get("base_revision"), tuple(fts)))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{where}: {dup[0]!r} appears twice; give each fine-tune a distinct label")
    return out


def read_manifest(path: str | Path) -> list[Group]:
    """The groups of a manifest file (see the module docstring); UserError naming any bad entry."""
    path = Path(path)
    return groups_from(_load(path), f"manifest {path}")
