"""What each `make reproduce-*` preset trains and where its results live — one place for all figures.

Every step is idempotent (lvf-train skips complete runs with the same config, lvf-analyze only analyses
new or changed runs), so rerunning a reproduction after a crash fills only the gaps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lora_vs_full.data.registry import PAPER_TASK_ORDER
from lora_vs_full.errors import UserError

RESULTS = Path(os.environ.get("LVF_RESULTS", "results"))


@dataclass(frozen=True)
class Fig5Preset:
    model: str  # conf/model option
    experiment: str  # conf/experiment preset (recipe deltas)
    tasks: tuple[str, ...]  # without a data dir
    data_tasks: tuple[str, ...]  # with DATA_DIR=<original release files>
    ranks: tuple[int, ...]
    gpu: bool  # refuse to start on a CPU-only machine (days of compute)


FIG5 = {
    # PAPER.md §10: MiniLM, 250 steps, its own documented learning rates (experiment=offline_sst2).
    # No data files -> the project's synthetic tasks; DATA_DIR -> real SST-2 (the §10 calibration).
    "offline": Fig5Preset(
        model="minilm",
        experiment="offline_sst2",
        tasks=("synth_sentiment", "synth_nli"),
        data_tasks=("sst2",),
        ranks=(1, 8, 64),
        gpu=False,
    ),
    # v1 Fig. 5: RoBERTa-base, the six tasks, the paper recipe (alpha = 2r, lr = 2.4e-3 / alpha).
    "paper": Fig5Preset(
        model="roberta-base",
        experiment="paper_roberta",
        tasks=tuple(PAPER_TASK_ORDER),
        data_tasks=tuple(PAPER_TASK_ORDER),
        ranks=(1, 2, 4, 8, 16, 64, 256, 2048),
        gpu=True,
    ),
}

# PAPER.md §7/§11: public LLaMA-2-7B fine-tunes (LoRA-TMLR-2024), analysed without training.
LLAMA_BASE = "meta-llama/Llama-2-7b-hf"
LLAMA_TUNED = tuple(
    [
        (f"LoRA-TMLR-2024/{task}-lora-rank-{r}-alpha-{2 * r}", task, "lora", r)
        for task in ("metamath", "magicoder")
        for r in (16, 64, 256)
    ]
    + [
        ("LoRA-TMLR-2024/metamath-full-finetuning-lr-1e-05", "metamath", "full", None),
        ("LoRA-TMLR-2024/magicoder-full-finetuning-lr-5e-05", "magicoder", "full", None),
    ]
)


def runs_dir(preset: str) -> Path:
    return RESULTS / "runs" / f"fig5-{preset}"


def analysis_dir(preset: str) -> Path:
    return RESULTS / "analysis" / f"fig5-{preset}"


def figures_dir(preset: str) -> Path:
    return RESULTS / "figures" / f"fig5-{preset}"


def text_file(data_dir: str | None) -> str | None:
    """A local WikiText file for the offline pseudo-loss, when the original files are at hand."""
    if data_dir is None:
        return None
    for cand in ("WikiText/wikitext-2-raw/wiki.test.raw", "wikitext-2-raw/wiki.test.raw", "wiki.test.raw"):
        if (Path(data_dir) / cand).is_file():
            return str(Path(data_dir) / cand)
    return None


def forgetting_text(preset: str, data_dir: str | None, out: Path, log=print) -> str | None:
    """The text Fig. 9 / Table 3 score: WikiText-2 test from ``data_dir``; offline without it, the project's
    own docs (a weak proxy, see docs/forgetting.md); otherwise None (lvf-pseudoloss reads WikiText from the Hub).
    """
    text = text_file(data_dir)
    if data_dir is not None and text is None:
        raise UserError(
            f"--data-dir {data_dir} has no WikiText/wikitext-2-raw/wiki.test.raw: add it or drop --data-dir"
        )
    if text is None and preset == "offline":
        import fig9

        text = str(fig9.docs_corpus(Path(__file__).resolve().parent.parent, out / "corpus-docs.txt"))
        log(f"[{preset}] no WikiText file; scoring the project's docs ({text}) -- a weak proxy")
    return text


def lvf(command: str, *args: str, log=print) -> None:
    """Run a console command (``train`` -> ``lvf-train``) with this interpreter; UserError on failure."""
    argv = [sys.executable, "-m", f"lora_vs_full.cli.{command}", *args]
    log("$ lvf-" + command + " " + " ".join(f"'{a}'" if "*" in a or " " in a else a for a in args))
    rc = subprocess.run(argv).returncode
    if rc != 0:
        raise UserError(f"lvf-{command} failed (exit {rc}); its message is above")


def require_gpu(preset: str, what: str) -> None:
    import torch

    if not torch.cuda.is_available() and not os.environ.get("LVF_ALLOW_CPU"):
        raise UserError(
            f"PRESET={preset} {what} targets a GPU and none is visible; use PRESET=offline here "
            "(or set LVF_ALLOW_CPU=1 to run it on the CPU anyway)"
        )


def ensure_fig5_runs(preset: str, data_dir: str | None = None, log=print) -> Path:
    """Train (idempotently) the Fig. 5 preset's LoRA ranks and full FT; return the runs directory."""
    if preset not in FIG5:
        raise UserError(f"unknown fig5 training preset {preset!r}: use one of {', '.join(FIG5)}")
    p = FIG5[preset]
    if p.gpu:
        require_gpu(preset, "training")
    tasks = p.data_tasks if data_dir else p.tasks
    common = [
        f"experiment={p.experiment}",
        f"model={p.model}",
        f"task={','.join(tasks)}",
        f"paths.runs_dir={runs_dir(preset)}",
        f"paths.results_dir={RESULTS}",
    ]
    if data_dir:
        common.append(f"task.data_dir={Path(data_dir).resolve()}")
    lvf("train", "-m", *common, "method=lora", f"method.rank={','.join(map(str, p.ranks))}", log=log)
    lvf("train", "-m", *common, "method=full", log=log)
    return runs_dir(preset)
