"""Where checkpoint files come from: a local folder, a single file, or the HF Hub.

`resolve_checkpoint` turns a name into a local path. Hub ids go through
`huggingface_hub.snapshot_download`, so the HF cache, revisions and offline mode
(`HF_HUB_OFFLINE=1`) behave exactly as they do for transformers.
`load_weights` reads the tensors, refusing pickle files unless asked.
"""

from __future__ import annotations

import json
import logging
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError
from .atomic import replace_atomically, write_text
from .embedded import DEFAULT_MODEL_NAME, default_model

logger = logging.getLogger(__name__)

# What a SigLIP checkpoint needs; pickle weights are fetched only when allowed.
_SAFE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
_PICKLE_PATTERNS = ["pytorch_model*.bin"]


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None, allow_pickle: bool = False) -> Path:
    """Return a local folder or file for a checkpoint folder, a weights file, a Hub id, or "default" (the embedded
    model, as an index records it; a folder of that name is "./default")."""
    if str(name_or_path) == DEFAULT_MODEL_NAME:
        return default_model()
    path = Path(name_or_path).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} only applies to Hub ids, but {str(path)!r} is a local path")
        return path
    name = str(name_or_path)
    if name.endswith((".safetensors", ".bin", ".json")) or name.startswith(("/", ".", "~")):
        raise CheckpointError(f"No such checkpoint file or folder: {name!r}")
    patterns = _SAFE_PATTERNS + (_PICKLE_PATTERNS if allow_pickle else [])
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except (HFValidationError, RepositoryNotFoundError, GatedRepoError) as e:
        raise CheckpointError(
            f"{name!r} is neither a local path nor an accessible Hub model id "
            f"(for gated or private repos, log in with `hf auth login`): {e}"
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"Revision {revision!r} not found for {name!r}: {e}") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{name!r} is not in the local Hugging Face cache and could not be downloaded "
            f"(offline, or HF_HUB_OFFLINE=1). Download it once with network access, "
            f"or pass a local checkpoint folder."
        ) from e


def read_json(folder: Path, filename: str) -> dict[str, Any] | None:
    """Read `folder/filename` as JSON, or None if it is absent."""
    file = folder / filename
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from e


# torch dtype -> safetensors dtype name, for the dtypes that safetensors.torch both saves and loads back. Listed in the
# order of safetensors' own `Dtype` enum (safetensors/src/tensor.rs; checked with safetensors 0.8.0): it writes the
# tensors by that enum, last first, then by name, and write_safetensors keeps the same order to give the same bytes.
_SAFETENSORS_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8",
    torch.float8_e5m2: "F8_E5M2", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e4m3fnuz: "F8_E4M3FNUZ",
    torch.float8_e5m2fnuz: "F8_E5M2FNUZ", torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32", torch.complex64: "C64",
    torch.float64: "F64", torch.int64: "I64", torch.uint64: "U64",
}
_SAFETENSORS_RANK = {dtype: rank for rank, dtype in enumerate(_SAFETENSORS_DTYPES)}


def _refuse_overlaps(state: dict[str, torch.Tensor]) -> None:
    """Refuse tensors whose bytes overlap, as `safetensors.torch.save` does, but not disjoint views of one buffer.

    Overlapping tensors would be stored twice and come back apart; disjoint views (q, k and v split from one qkv
    weight) are just separate tensors. A tensor spans its bytes from its first element to its last, so interleaved
    views (columns split from a row-major weight) count as overlapping: safetensors refuses those as non-contiguous.
    """
    spans: dict[tuple[torch.device, int], list[tuple[int, int, str]]] = {}
    for name, tensor in state.items():
        if tensor.nbytes:  # empty tensors store nothing, so share nothing (safetensors lets them through too)
            start = tensor.data_ptr()
            last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
            stop = start + (last + 1) * tensor.element_size()
            # device too: each GPU numbers its memory on its own
            spans.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append((start, stop, name))
    order = list(state)
    for group in spans.values():
        group.sort()
        end, owner = group[0][1], group[0][2]
        for start, stop, name in group[1:]:
            if start < end:
                first, second = sorted((owner, name), key=order.index)
                raise ValueError(f"{first} and {second} share memory, and safetensors stores each tensor on its own: "
                                 f"save one of them, or .clone() the other")
            if stop > end:
                end, owner = stop, name


def write_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `state` as a safetensors file, one tensor at a time, readable as the umask allows like the JSON beside it.

    `safetensors.torch.save` builds the whole file in memory first (a second copy of the weights: 3.5 GB more for
    an So400m SiglipModel in float32), and `save_file` creates its files owner-only, 0600, whatever the umask.
    The format: an 8-byte little-endian header length, the JSON header (names, dtypes, shapes and byte ranges),
    spaces to a multiple of 8 bytes, then the tensors' bytes back to back. The tensors go in safetensors' own order
    (see _SAFETENSORS_DTYPES), wider dtypes first, so that each starts aligned to its element size and the file is
    byte for byte what `safetensors.torch.save(state, metadata={"format": "pt"})` makes of them. That refuses
    non-contiguous tensors; this writes them contiguous.
    """
    for name, tensor in state.items():
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name} is {tensor.dtype}, which safetensors (and so this writer) can't store and load "
                             f"back: convert it first, e.g. with .float()")
    _refuse_overlaps(state)
    tensors = sorted(state.items(), key=lambda item: (-_SAFETENSORS_RANK[item[1].dtype], item[0]))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors:
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")  # as safetensors' serde_json
    head += b" " * (-len(head) % 8)

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<Q", len(head)) + head)
        for _, tensor in tensors:  # a copy of at most one tensor at a time (moved to the CPU, or made contiguous)
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            width = tensor.element_size() // (2 if tensor.is_complex() else 1)  # a complex is two floats
            if sys.byteorder == "big" and width > 1:  # safetensors stores little-endian
                data = data.view(-1, width).flip(1).reshape(-1)
            f.write(memoryview(data.numpy()))

    replace_atomically(path, write)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, the way transformers writes its config files, replacing `path` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")  # serialised first: a bad value changes nothing


def weight_files(folder: Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files of a checkpoint folder, safetensors first, shards in index order."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = read_json(folder, index_name)
        if index is not None:
            files = [folder / f for f in dict.fromkeys(index["weight_map"].values())]
        elif (folder / single).is_file():
            files = [folder / single]
        else:
            continue
        if single.endswith(".bin") and not allow_pickle:
            raise CheckpointError(
                f"{folder} has only pickle weights ({files[0].name}). Pickle can run code when loaded; "
                f"pass allow_pickle=True if you trust it (it is then loaded with torch.load(weights_only=True)), "
                f"or convert it to safetensors."
            )
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder} lists weight shards that are missing: {missing}")
        return files
    raise CheckpointError(
        f"No weights found in {folder}: expected model.safetensors (or a sharded "
        f"model.safetensors.index.json); found {sorted(p.name for p in folder.iterdir())}"
    )


def load_weights(files: list[Path], allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read and merge the tensors of one or more weight files onto the CPU."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            try:
                part = load_file(file, device="cpu")
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"Could not read {file} (corrupt or incomplete download?): {e}") from e
        elif file.suffix == ".bin":
            if not allow_pickle:
                raise CheckpointError(
                    f"Refusing to unpickle {file}: pickle can run code. Pass allow_pickle=True if you trust "
                    f"it (it is loaded with torch.load(weights_only=True)), or convert it to safetensors."
                )
            try:
                part = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise CheckpointError(
                    f"{file} holds more than tensors, and loading with weights_only=True refused it: {e}"
                ) from e
        else:
            raise CheckpointError(f"Unknown weights format {file.suffix!r} for {file}: use .safetensors")
        state.update(part)
    return state
