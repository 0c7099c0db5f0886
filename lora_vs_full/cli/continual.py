"""``lvf-continual``: the continual-learning sequence (PAPER.md §5, v1 Fig. 8) as a Hydra app.

    lvf-continual method=lora method.rank=8
    lvf-continual method=full
    lvf-continual -m method.rank=1,8,64
    lvf-continual experiment=continual_offline method=lora method.rank=8

All the work is :func:`lora_vs_full.continual.run_continual`; this file only composes the config.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.continual.config import register_configs

register_configs()  # the schema must be in the ConfigStore before Hydra composes


@hydra.main(config_path=CONFIG_DIR, config_name="continual", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from lora_vs_full.continual import run_continual

    run_dir = run_continual(cfg)
    print(f"continual run: {run_dir}\ntables: {run_dir.parent}/continual.parquet (.csv)")


if __name__ == "__main__":
    main()
