"""Training-set size (v3 appendix): intruders and accuracy vs task.max_train_samples for LoRA r = 1 and r = 8.

Left: intruder dimensions at (k, epsilon) summed over the matrices against the training rows (log x); right:
eval accuracy. Error bars: Student-t across seeds (none with one seed); one run's accuracy: Wilson over the
eval examples. Writes ``datasize.{png,pdf,csv}`` and ``datasize_headline.csv``.

    python experiments/fig_datasize.py --preset offline
"""

from __future__ import annotations

import argparse

import figsweep

from lora_vs_full.cli._common import user_errors_exit

PAPER_FIGURE = "v3 appendix: intruders vs training-set size"


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline", help="offline | paper (results/tables/datasize-<preset>)")
    args = ap.parse_args(argv)
    figsweep.draw("datasize", args.preset, kind="x", xlabel="training rows (task.max_train_samples)", log_base=10,
                  paper=PAPER_FIGURE, title="Intruders vs training-set size")  # fmt: skip


if __name__ == "__main__":
    main()
