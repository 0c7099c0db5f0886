"""alpha = 8 vs alpha = 2r (v3 Table 1 + the alpha = 8 intruder figure): intruders and accuracy vs LoRA rank.

Left: intruder dimensions at (k, epsilon) summed over the matrices against the rank (log x), one line per alpha
rule, full FT as a black horizontal line; right: eval accuracy against the rank. Error bars: Student-t
intervals across seeds for intruders (none with one seed), the same for accuracy or, with one seed, Wilson's
over the eval examples. Writes ``alpha.{png,pdf,csv}`` (the drawn numbers) and ``alpha_headline.csv``.
The learning rate each rule used is a column of the headline (conf/reproduce/alpha_offline.yaml says why).

    python experiments/fig_alpha.py --preset offline   # results/tables/alpha-offline -> results/figures/alpha-offline
"""

from __future__ import annotations

import argparse

import figsweep

from lora_vs_full.cli._common import user_errors_exit

PAPER_FIGURE = "v3 Table 1 + alpha = 8 intruder figure (appendix)"


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline", help="offline | paper (results/tables/alpha-<preset>)")
    args = ap.parse_args(argv)
    figsweep.draw("alpha", args.preset, kind="x", xlabel="LoRA rank r", paper=PAPER_FIGURE,
                  title="Intruders vs rank: alpha = 8 vs alpha = 2r")  # fmt: skip


if __name__ == "__main__":
    main()
