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

``storage_dtype=torch.float32`` stores a float64 decomposition's U and S rounded to float32 (half the disk;
its measured effect on counts is in BENCHMARKS.md) and upcasts on load; such files carry ``-f32`` in their
name and ``storage`` in their metadata, so they never stand in for a float64-stored entry. A hit returns
the stored (rounded) values, and so does the miss that wrote them: a run gives the same answer whether or
not the file already existed.
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

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        max_memory_bytes: int = 2 << 30,
        storage_dtype: torch.dtype | None = None,
    ):
        self.root = None if root is None else Path(root)
        if storage_dtype not in (None, torch.float32, torch.float64):
            raise UserError(f"cache storage dtype {storage_dtype} is not supported; use float64 or float32")
        self.storage_dtype = storage_dtype
        self.max_memory_bytes = int(max_memory_bytes)
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[tuple, SVD] = OrderedDict()
        self._memory_bytes = 0

    def path_for(self, model_identity: str, tensor_name: str, dtype: torch.dtype) -> Path | None:
        if self.root is None:
            return None
        dt = str(dtype).removeprefix("torch.")
        if self._narrowed(dtype):
            dt += "-f32"
        return self.root / _safe(model_identity) / f"{_safe(tensor_name)}.{dt}.safetensors"

    def _narrowed(self, dtype: torch.dtype) -> bool:
        return self.storage_dtype == torch.float32 and dtype == torch.float64

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
        if self._narrowed(dtype):
            meta["storage"] = "float32"
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
            if self._narrowed(dtype):  # round as stored, so a miss and a later hit agree exactly
                U, S = U.to(torch.float32), S.to(torch.float32)
            stored = {"U": U.contiguous(), "S": S.contiguous()}
            if path is not None:
                atomic_write_with(path, lambda p: save_file(stored, str(p), metadata=meta))
            svd = SVD(stored["U"].to(dtype), stored["S"].to(dtype), None)
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
                dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
                return SVD(fh.get_tensor("U").to(dtype), fh.get_tensor("S").to(dtype), None)
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
