"""The one device resolver of every command (``device=auto|cpu|cuda[:i]|mps``).

``auto`` (or None) means cuda when a GPU is visible, else cpu. An explicit device that is absent
(``cuda`` on a CPU-only machine, ``cuda:3`` on a 2-GPU node, ``mps`` off Apple silicon) or a name torch
does not know is a one-line :class:`UserError` naming the value and the fix, never a late CUDA error.
"""

from __future__ import annotations

from lora_vs_full.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda[:i] or mps"


def resolve_device(name=None):
    """``torch.device`` for ``name`` (a string, a torch.device, or None = auto); UserError when unusable."""
    import torch

    if isinstance(name, torch.device):
        spec = name
    elif name is None or str(name).strip() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            spec = torch.device(str(name).strip())
        except (RuntimeError, ValueError):
            raise UserError(f"unknown device={name!r}: use {DEVICE_CHOICES}") from None
    if spec.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but no CUDA device is visible: use device=auto or device=cpu")
        if spec.index is not None and spec.index >= torch.cuda.device_count():
            raise UserError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible: "
                "use device=cuda:0 or device=auto"
            )
    elif spec.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"device={name} but MPS is not available here: use device=auto or device=cpu")
    elif spec.type != "cpu":
        raise UserError(f"unknown device={name!r}: use {DEVICE_CHOICES}")
    return spec


def default_device():
    """``resolve_device("auto")``: cuda when available, else cpu."""
    return resolve_device(None)
