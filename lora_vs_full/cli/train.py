"""``lvf-train``: fine-tune one (model, task, method) from Hydra configs into its run directory.

    lvf-train task=sst2 method=lora method.rank=8
    lvf-train task=mnli method=full
    lvf-train -m task=mnli,qqp method=lora method.rank=1,2,4,8,16,64,256,2048
    lvf-train -m launcher=slurm method.rank=1,8,64          # one SLURM job per point (submitit)
    lvf-train debug=smoke                                   # seconds, offline

All the work is in :func:`lora_vs_full.runs.execute`; this module only binds it to Hydra.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lora_vs_full.cli._common import CONFIG_DIR
from lora_vs_full.config import register_configs
from lora_vs_full.errors import UserError

register_configs()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Returns the eval accuracy (Hydra sweepers can optimise it)."""
    import datasets

    from lora_vs_full.runs import execute, run_dir_for

    datasets.disable_progress_bars()  # per-split map/flatten bars drown the training bar
    log = logging.getLogger("lora_vs_full.train").info
    try:
        return execute(cfg, log=log)["eval_accuracy"]
    except UserError as exc:
        # Hydra would print a traceback for an ordinary exception; a user error is one line, exit 2.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            f"error: interrupted; {run_dir_for(cfg)} has no final.json and will be wiped and restarted "
            "by the next identical lvf-train call",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
