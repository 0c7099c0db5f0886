"""Training: the loop and evaluation (:mod:`.loop`), optimiser and schedule (:mod:`.optim`)."""

from lora_vs_full.training.loop import encode, evaluate, make_collator, make_loader, train

__all__ = ["encode", "evaluate", "make_collator", "make_loader", "train"]
