"""lora-vs-full: reference suite for "LoRA vs Full Fine-tuning: An Illusion of Equivalence".

Importing the package does no work: submodules are imported where they are used.
"""

__version__ = "0.1.0"
