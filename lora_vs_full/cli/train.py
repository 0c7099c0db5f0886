"""``lvf-train``: fine-tune one (model, task, method) from Hydra configs into its run directory.

    lvf-train task=sst2 method=lora method.rank=8
    lvf-train task=mnli method=full
    lvf-train -m task=mnli,qqp method=lora method.rank=1,2,4,8,16,64,256,2048
    lvf-train -m launcher=slurm method.rank=1,8,64          # one SLURM job per point (submitit)
    lvf-train debug=smoke                                   # seconds, offline

All the work is in :func:`lora_vs_full.runs.execute`; this module only binds it to Hydra. A killed run
resumes from its last saved state when the same command is rerun (``save_state_every``). In a sweep a
failing job is recorded and the others go on; the summary at the end names the failures and the exit
status is non-zero (``lora_vs_full.cli._common``).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lora_vs_full.cli._common import CONFIG_DIR, set_job_status, user_errors_exit
from lora_vs_full.config import register_configs

register_configs()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    """Returns the eval accuracy (Hydra sweepers can optimise it)."""
    import datasets

    from lora_vs_full.config import validate
    from lora_vs_full.runs import execute, is_current, run_dir_for

    validate(cfg)  # a bad value is one line before anything else (run_dir_for reads the method)
    datasets.disable_progress_bars()  # per-split map/flatten bars drown the training bar
    log = logging.getLogger("lora_vs_full.train").info
    try:
        skipped = is_current(run_dir_for(cfg), cfg)
        accuracy = execute(cfg, log=log)["eval_accuracy"]
    except KeyboardInterrupt:
        print(
            f"error: interrupted; the next identical lvf-train call resumes {run_dir_for(cfg)} from its last "
            "saved state (save_state_every), or restarts it when none was saved yet",
            file=sys.stderr,
        )
        sys.exit(130)
    set_job_status("skipped" if skipped else "done")
    return accuracy


if __name__ == "__main__":
    main()
