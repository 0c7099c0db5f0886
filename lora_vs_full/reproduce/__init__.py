"""Reproductions: preset (conf/reproduce/*.yaml) -> runs -> tables. Figures are drawn by experiments/.

One module per reproduction, each with ``reproduce(cfg, data_dir, log) -> list[Path]``; ``lvf-reproduce``
(lora_vs_full/cli/reproduce.py) composes the preset and calls it. Nothing here plots.
"""
