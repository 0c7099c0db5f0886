"""Training only B (v3 appendix): LoRA with A frozen at its random init vs training A and B, same rank and lr.

Left: intruders (sum over matrices, k from the tables) against epsilon per configuration; right: accuracy
with its interval. Writes ``bonly.{png,pdf,csv}`` and ``bonly_headline.csv`` (intruders at the headline
epsilon and accuracy per configuration).

    python experiments/fig_bonly.py --preset offline
"""

from __future__ import annotations

import argparse

import figsweep

from lora_vs_full.cli._common import user_errors_exit

PAPER_FIGURE = "v3 appendix: training only B"


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline", help="offline | paper (results/tables/bonly-<preset>)")
    args = ap.parse_args(argv)
    figsweep.draw("bonly", args.preset, kind="curves", paper=PAPER_FIGURE, title="LoRA: A and B vs B only")


if __name__ == "__main__":
    main()
