"""Persistent cache of PRETRAINED matrices' decompositions, so a base is decomposed once per machine.

Every fine-tune of a base is compared against the same W0; the authors' script re-decomposed W0 for every
checkpoint and every epsilon. Here the base's U and S are computed once and kept:

* in memory (an LRU bounded by ``max_memory_bytes``, so a 7B base streams instead of filling RAM), and
* on disk when ``root`` is given: one safetensors file per (model, tensor, dtype) under
  ``root/<model>/<tensor>.<dtype>.safetensors``, written atomically, its key in the file's metadata.

Key = (model_identity, tensor_name, compute dtype, shape) + a fingerprint of W's bytes (BLAKE2b over the
whole tensor plus its storage dtype), so a changed base invalidates the entry instead of being silently
reused: a mismatching file is recomputed and overwritten. Hashing every byte (not a sample) costs about
1-3 % of the float64 SVD it guards (measured in BENCHMARKS.md) and cannot miss a change.

What is stored: U and S only. The intruder test and the similarity matrices need the base's U, the spectra
and effective rank its S; nothing needs the base's Vh (the scaling intervention decomposes the TUNED
matrix), and dropping it halves the disk and memory for square matrices (more for wide ones). Results
therefore come back as ``SVD(U, S, Vh=None)`` -- the same on a hit and on a miss.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lora_vs_full.errors import UserError
from lora_vs_full.spectral.svd import SVD, check_dtype, thin_svd
from lora_vs_full.storage import atomic_write_with

FORMAT_VERSION = "1"


def fingerprint(W: Tensor) -> str:
    """BLAKE2b-128 of W's storage dtype, shape and raw bytes (hex). Same values and dtype <=> same hash."""
    w = W.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{w.dtype}|{tuple(w.shape)}|".encode())
    # view(uint8) reinterprets the bytes (no copy), which also works for bf16 that numpy cannot represent.
    h.update(w.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _safe(part: str) -> str:
    # Hub ids contain '/', revisions '@'; keep names readable and portable.
    return re.sub(r"[^A-Za-z0-9._@=-]+", "_", part).strip("._") or "_"


class SVDCache:
    """Base-SVD cache; ``root=None`` keeps it in memory only. Counters: ``hits``, ``misses``."""

    def __init__(self, root: str | os.PathLike | None, *, max_memory_bytes: int = 2 << 30):
        self.root = None if root is None else Path(root)
        self.max_memory_bytes = int(max_memory_bytes)
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[tuple, SVD] = OrderedDict()
        self._memory_bytes = 0

    def path_for(self, model_identity: str, tensor_name: str, dtype: torch.dtype) -> Path | None:
        if self.root is None:
            return None
        dt = str(dtype).removeprefix("torch.")
        return self.root / _safe(model_identity) / f"{_safe(tensor_name)}.{dt}.safetensors"

    def get_or_compute(
        self,
        model_identity: str,
        tensor_name: str,
        W: Tensor,
        *,
        dtype: torch.dtype = torch.float64,
        device=None,
    ) -> SVD:
        """U (m, r) and S (r,) of the pretrained matrix W (m, n) in ``dtype`` on the CPU; Vh is None.

        ``model_identity``: a stable name for the base (``hub_id@revision`` or a content hash of its weight
        files); ``tensor_name``: the matrix within it (e.g. ``layer3.fc1``). Loads from memory or disk
        when the key and W's fingerprint match, otherwise decomposes (on ``device``) and stores.
        """
        check_dtype(dtype)
        if not model_identity or not tensor_name:
            raise UserError(
                "SVDCache needs a non-empty model_identity and tensor_name (e.g. 'roberta-base@main')"
            )
        fp = fingerprint(W)
        meta = {
            "format": FORMAT_VERSION,
            "model_identity": model_identity,
            "tensor_name": tensor_name,
            "dtype": str(dtype),
            "shape": "x".join(map(str, W.shape)),
            "fingerprint": fp,
        }
        key = tuple(sorted(meta.items()))
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self.path_for(model_identity, tensor_name, dtype)
        svd = self._load(path, meta) if path is not None else None
        if svd is not None:
            self.hits += 1
        else:
            self.misses += 1
            U, S, _ = thin_svd(W, dtype=dtype, device=device)
            svd = SVD(U.contiguous(), S.contiguous(), None)
            if path is not None:
                atomic_write_with(path, lambda p: save_file({"U": svd.U, "S": svd.S}, str(p), metadata=meta))
        self._remember(key, svd)
        return svd

    @staticmethod
    def _load(path: Path, meta: dict[str, str]) -> SVD | None:
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                if fh.metadata() != meta:  # stale (W changed) or another version: recompute, overwrite
                    return None
                return SVD(fh.get_tensor("U"), fh.get_tensor("S"), None)
        except Exception:  # a corrupt/foreign file is treated as a miss and replaced, never trusted
            return None

    def _remember(self, key: tuple, svd: SVD) -> None:
        size = svd.U.numel() * svd.U.element_size() + svd.S.numel() * svd.S.element_size()
        if size > self.max_memory_bytes:
            return
        self._memory[key] = svd
        self._memory_bytes += size
        while self._memory_bytes > self.max_memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.U.numel() * old.U.element_size() + old.S.numel() * old.S.element_size()
