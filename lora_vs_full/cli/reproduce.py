"""``lvf-reproduce``: preset -> runs -> tables for one of the paper's figures (``make reproduce-*`` calls it).

    lvf-reproduce fig5 --preset offline [--data-dir ../shared/data/raw] [ranks=[1,8] seeds=[1,2,3]]
    lvf-reproduce fig5 --preset paper | llama
    lvf-reproduce fig8 | fig9 | table3 | correlation --preset offline|paper

The preset is ``conf/reproduce/<figure>_<preset>.yaml`` (trailing ``key=value`` words override it, typed:
a misspelt key is an error). Every step is idempotent: rerunning after a crash fills only the gaps. The
figure itself is drawn by ``experiments/<figure>.py`` from the tables this writes.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

# figure -> (module with reproduce(), preset schema) under lora_vs_full.reproduce
FIGURES = {
    "fig5": ("fig5", "reproduce", "Fig5Preset"),
    "fig8": ("continual", "reproduce", "Fig8Preset"),
    "fig9": ("forgetting", "reproduce_fig9", "Fig9Preset"),
    "table3": ("forgetting", "reproduce_table3", "Table3Preset"),
    "correlation": ("forgetting", "reproduce_correlation", "CorrelationPreset"),
    "evolution": ("evolution", "reproduce", "EvolutionPreset"),
    "alpha": ("variants", "reproduce", "SweepPreset"),
    "variants": ("variants", "reproduce", "SweepPreset"),
    "bonly": ("variants", "reproduce", "SweepPreset"),
    "datasize": ("variants", "reproduce", "SweepPreset"),
}


def resolve(figure: str):
    """``(reproduce function, schema)`` of a figure; a one-line error for an unknown one."""
    if figure not in FIGURES:
        raise UserError(f"unknown figure {figure!r}: use one of {', '.join(FIGURES)}")
    module, fn, schema = FIGURES[figure]
    mod = importlib.import_module(f"lora_vs_full.reproduce.{module}")
    return getattr(mod, fn), getattr(mod, schema, None)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    from lora_vs_full.reproduce import common

    ap = argparse.ArgumentParser(prog="lvf-reproduce", description=__doc__.splitlines()[0])
    ap.add_argument("figure", help=", ".join(FIGURES))
    ap.add_argument("--preset", default="offline", help="offline | paper | llama (conf/reproduce/)")
    ap.add_argument("--data-dir", default=None, help="original dataset release files (DATA_DIR)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    args = ap.parse_intermixed_args(argv)  # `make ... ARGS=` puts overrides after --preset/--data-dir
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(
            f"DATA_DIR={args.data_dir} is not a directory: point it at ../shared/data/raw or drop it"
        )
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} is not key=value (e.g. seeds=[1,2,3])")
    reproduce, schema = resolve(args.figure)
    cfg = common.load_preset(f"{args.figure}_{args.preset}", args.overrides, schema=schema)
    paths = reproduce(cfg, args.data_dir)
    script = (
        args.figure if args.figure.startswith(("fig", "table")) else f"fig_{args.figure}"
    )  # fig_alpha.py ...
    print(
        f"\n{len(paths)} tables written; draw them with: python experiments/{script}.py --preset {args.preset}"
    )


if __name__ == "__main__":
    main()
