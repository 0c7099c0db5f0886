"""Weight sources: read ONE weight matrix at a time from a HF checkpoint, never the whole model.

A :class:`WeightSource` names its model (``identity``, the key of the base-SVD cache), its architecture
(``model_type``, ``family``), the analysed matrices (``matrices(preset) -> {MatrixId: key}``) and returns
one tensor per :meth:`WeightSource.get` call, in the dtype stored on disk, on the CPU. Streaming matters:
the paper analyses 7B-parameter models, so memory must stay a small multiple of the largest matrix.

Supported on-disk layouts (a HF model directory):
- ``model.safetensors`` (single file) or ``model.safetensors.index.json`` + shards: read lazily with
  ``safetensors.safe_open`` (memory-mapped, one tensor materialised per call);
- legacy ``pytorch_model.bin`` (+ index): ``torch.load(weights_only=True, mmap=True)``, never unpickled
  with arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import struct
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import Tensor

from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import MatrixId, family, select_matrices

# Bytes hashed at the start and end of every tensor for the identity fingerprint (see _fingerprint).
_SAMPLE = 4096


class WeightSource(ABC):
    """One model's weights, addressed by state-dict key; keys are the source's own spelling."""

    #: stable id of the weights: Hub ``id@commit`` or a content fingerprint of local files
    identity: str
    #: HF ``config.model_type`` (``roberta``, ``bert``, ``llama`` ...)
    model_type: str
    #: human-readable location (path or Hub id) for messages and provenance
    location: str

    @property
    def family(self) -> str:
        return family(self.model_type)

    @abstractmethod
    def keys(self) -> list[str]:
        """Every tensor key in the checkpoint."""

    @abstractmethod
    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of one tensor, from metadata only (no data read)."""

    @abstractmethod
    def get(self, key: str) -> Tensor:
        """One tensor, CPU, stored dtype. Reads only that tensor's bytes."""

    def matrices(self, preset: str = "all_linear") -> dict[MatrixId, str]:
        """``{MatrixId: key}`` of the analysed matrices in ``preset``, sorted by (layer, module)."""
        return select_matrices(self.keys(), self.family, preset)

    def merge(self, key: str, W0: Tensor) -> Tensor:
        """This source's tensor ``key`` when the caller already holds the base's ``W0`` (adapters merge
        onto it instead of reading the base again); a full model just reads its own tensor."""
        return self.get(key)

    def run_meta(self) -> dict:
        """Run columns this source knows about itself (``method``, ``rank``, ``alpha``); {} if none."""
        return {}

    def describe(self) -> dict:
        return {"location": self.location, "identity": self.identity, "model_type": self.model_type}


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(
        f"{path} is corrupted or truncated ({why}); delete it and re-download / re-save the model"
    )


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """``(header dict, data offset)`` of a .safetensors file, validated against the file size.

    safetensors' own errors are cryptic (``MetadataIncompleteBuffer``) and only surface on first access;
    checking here turns a truncated download into a one-line UserError before any work starts.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise _corrupt(path, "file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw_len)
            if n > size - 8:
                raise _corrupt(path, f"header length {n} exceeds file size {size}")
            header = json.loads(fh.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"unreadable header: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}; check the path and permissions") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    data_len = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise _corrupt(path, f"tensor {key!r} has no data_offsets") from None
        if not 0 <= begin <= end <= data_len:
            raise _corrupt(path, f"tensor {key!r} ends at byte {end} but the data section has {data_len}")
    return header, 8 + n


def _fingerprint_safetensors(path: Path, header: dict, data_start: int, h) -> None:
    """Feed the header plus the first/last ``_SAMPLE`` bytes of every tensor into hash ``h``.

    A full sha256 of a 7B model costs minutes; the header alone does not change when values do. Every
    fine-tuning step moves (almost) every entry of a trained tensor, so sampling both ends of every tensor
    detects changed weights at a cost of ~8 KiB per tensor.
    """
    h.update(json.dumps(header, sort_keys=True).encode())
    with open(path, "rb") as fh:
        for key in sorted(k for k in header if k != "__metadata__"):
            begin, end = header[key]["data_offsets"]
            for start in sorted({begin, max(begin, end - _SAMPLE)}):
                fh.seek(data_start + start)
                h.update(fh.read(min(_SAMPLE, end - start)))


def _file_sha256(path: Path, h) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


class HFWeights(WeightSource):
    """A local HF model directory (base model or full fine-tune), safetensors or legacy .bin."""

    def __init__(self, directory: str | Path, *, identity: str | None = None, location: str | None = None):
        self.dir = Path(directory)
        self.location = location or str(self.dir)
        self.model_type = _read_model_type(self.dir)
        self._key_file: dict[str, Path] = {}
        self._headers: dict[Path, dict] = {}
        self._bin: dict[Path, dict] = {}
        h = hashlib.sha256()
        files = self._index_files()
        for f in files:
            if f.suffix == ".safetensors":
                header, start = read_safetensors_header(f)
                self._headers[f] = header
                if identity is None:
                    _fingerprint_safetensors(f, header, start, h)
                for k in header:
                    if k != "__metadata__":
                        self._key_file[k] = f
            else:
                if identity is None:
                    _file_sha256(f, h)  # legacy .bin files are small (base-size models); hash them whole
                for k in self._load_bin(f):
                    self._key_file[k] = f
        self.identity = identity or f"sha256:{h.hexdigest()[:32]}"

    def _index_files(self) -> list[Path]:
        d = self.dir
        for stem, ext in (("model", ".safetensors"), ("pytorch_model", ".bin")):
            index = d / f"{stem}{ext}.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise _corrupt(index, f"not a valid shard index: {exc}") from None
                files = sorted({d / name for name in weight_map.values()})
                missing = [f.name for f in files if not f.is_file()]
                if missing:
                    raise UserError(
                        f"{index} lists shards that are missing: {', '.join(missing)}; re-download"
                    )
                return files
            if (d / f"{stem}{ext}").is_file():
                return [d / f"{stem}{ext}"]
        raise UserError(
            f"no weights in {d}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
        )

    def _load_bin(self, f: Path) -> dict:
        if f not in self._bin:
            self._bin[f] = load_bin_safely(f)
        return self._bin[f]

    def run_meta(self) -> dict:
        """A model directory (no adapter_config.json) is a full fine-tune: it carries all its weights."""
        return {"method": "full"}

    def keys(self) -> list[str]:
        return list(self._key_file)

    def _file(self, key: str) -> Path:
        try:
            return self._key_file[key]
        except KeyError:
            raise UserError(f"tensor {key!r} is not in {self.location}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        f = self._file(key)
        if f in self._headers:
            return tuple(self._headers[f][key]["shape"])
        return tuple(self._load_bin(f)[key].shape)

    def get(self, key: str) -> Tensor:
        from safetensors import SafetensorError, safe_open

        f = self._file(key)
        if f not in self._headers:
            return self._load_bin(f)[key]
        try:
            with safe_open(f, framework="pt", device="cpu") as fh:
                return fh.get_tensor(key)
        except SafetensorError as exc:
            raise _corrupt(f, str(exc)) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no message"


def load_bin_safely(path: Path) -> dict[str, Tensor]:
    """A pickled state dict, loaded with ``weights_only=True`` (tensors and plain containers only: a pickle
    that would call any other function is refused by torch's restricted unpickler, not run)."""
    try:
        try:  # mmap: tensors stay on disk until touched (zip-format files only)
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except Exception as exc:  # UnpicklingError for a code-executing pickle, many types for a broken file
        raise UserError(
            f"cannot load {path} safely ({type(exc).__name__}: {_first_line(exc)}); "
            "it is not a plain tensor file -- re-download it or convert it to safetensors"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(t, Tensor) for t in sd.values()):
        raise UserError(f"{path} does not hold a flat dict of tensors; re-save the adapter with PEFT")
    return sd


def _read_model_type(d: Path) -> str:
    cfg = d / "config.json"
    if not cfg.is_file():
        raise UserError(
            f"{d} has no config.json; pass a Hugging Face model directory (save_pretrained output)"
        )
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise _corrupt(cfg, str(exc)) from None
    if not model_type:
        raise UserError(f"{cfg} has no model_type; re-save the model with transformers' save_pretrained")
    return str(model_type)
