"""Other PEFT methods (v3 appendix): intruders vs epsilon for LoRA, DoRA, PiSSA, OLoRA, AdaLoRA, LoRA+, VeRA
and full FT, with each method's accuracy beside it ("at matched accuracy").

Left: intruders (sum over matrices) against epsilon; right: accuracy with its interval. The headline
(``variants_headline.csv``) adds ``acc_matches_lora``: whether the method's accuracy interval overlaps LoRA's,
i.e. whether its intruder count is compared at an accuracy this run cannot tell apart from LoRA's, and the
counts at epsilon = 0.7 and 0.9 (mean over seeds) beside the headline epsilon's.

    python experiments/fig_variants.py --preset offline
"""

from __future__ import annotations

import argparse

import figsweep
import pandas as pd

from lora_vs_full.cli._common import user_errors_exit

PAPER_FIGURE = "v3 appendix: intruders in other PEFT methods"
REFERENCE = "LoRA"
EXTRA_EPSILONS = (0.7, 0.9)


def headline(t: dict) -> pd.DataFrame:
    head = figsweep.default_headline(t["summary"])
    out = []
    for _task, sub in head.groupby("task", sort=False):
        ref = sub[sub["group"] == REFERENCE]
        lo, hi = (ref["acc_low"].iloc[0], ref["acc_high"].iloc[0]) if len(ref) else (float("nan"),) * 2
        out.append(sub.assign(acc_matches_lora=(sub["acc_high"] >= lo) & (sub["acc_low"] <= hi)))
    head = pd.concat(out, ignore_index=True)
    curves = figsweep.mean_curves(t["curves"])
    for eps in EXTRA_EPSILONS:  # the counts further up the epsilon axis (PiSSA/OLoRA differ there)
        at = curves[(curves["epsilon"] - eps).abs() < 1e-9][["task", "group", "n_intruders"]]
        head = head.merge(
            at.rename(columns={"n_intruders": f"intruders_eps{eps:g}"}), on=["task", "group"], how="left"
        )
    return head


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline", help="offline | paper (results/tables/variants-<preset>)")
    args = ap.parse_args(argv)
    figsweep.draw("variants", args.preset, kind="curves", paper=PAPER_FIGURE, headline=headline,
                  title="Intruders in PEFT variants of LoRA")  # fmt: skip


if __name__ == "__main__":
    main()
