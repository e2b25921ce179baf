"""Inference modes of the vision tower, chosen in one place: `optimize(model, mode)`.

- "exact": the eager/SDPA path, bit for bit what `from_pretrained` gives (the parity tests run on it).
- "fast": the same weights compiled by inductor, with freezing (constants folded, weights prepacked for oneDNN on
  CPU). Compiled code is cached on disk by inductor, so a second process compiles faster.
- "int8": torchao's int8 linear layers, in the scheme accurate on this CPU (see `int8`), compiled.
- "onnx" and "onnx-int8": the tower exported to ONNX and run by ONNX Runtime (see `onnx_runtime`).

Compiling costs tens of seconds on a 2-core CPU (52-58 s for int8 B/16), so it pays only over many images;
`choose_mode` decides for a job of a given size. Only the vision tower changes: text embeddings stay exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..model import AUTO, VisionTransformer, native_bf16
from .int8 import int8_available, quantize_int8

if TYPE_CHECKING:
    from ..model import DualEncoder  # imports transformers: not at import time

MODES = ("exact", "fast", "int8", "onnx", "onnx-int8")
MODE_CHOICES = (AUTO, *MODES)
MODE_HELP = ("how the vision tower runs: 'exact' (eager, bit for bit transformers' numbers), 'fast' (compiled), "
             "'int8' (int8 linear layers, compiled), 'onnx'/'onnx-int8' (ONNX Runtime); 'auto' picks by the "
             "machine and the number of images (docs/performance.md)")

# Images a CPU build must encode before compiling to int8 pays for the compile, from B/16 on 2-core AMD EPYCs
# (2026-12-07): with native bf16, exact bf16 ran 8.1 img/s and int8 9.7 after a 58 s compile, even at about 2,800
# images; with AVX2 only, exact fp32 3.7 and int8 6.1 after 49 s (issue 35's figures), even at about 460.
INT8_PAYS_FROM = {"native bf16": 3000, "no native bf16": 500}


def int8_pays_from(device: torch.device | str | None = None) -> int:
    """The number of images from which `auto` compiles a CPU build to int8 (see INT8_PAYS_FROM)."""
    return INT8_PAYS_FROM["native bf16" if native_bf16(device) else "no native bf16"]


def choose_mode(device: torch.device | str | None = None, images: int | None = None) -> str:
    """The mode `auto` means for a job of `images` images (None: unknown, e.g. a server's queries) on `device`."""
    device = torch.device(device or "cpu")
    if device.type == "cpu" and images is not None and images >= int8_pays_from(device) and int8_available():
        return "int8"
    return "exact"  # short jobs and queries: no compile wait; GPUs: not measured yet in this project


def optimize(model: DualEncoder | VisionTransformer, mode: str) -> DualEncoder | VisionTransformer:
    """Put `model`'s vision tower (in place) into `mode`; returns `model`. For inference only: save the original."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose from {MODES} (or {AUTO!r} where a command takes it)")
    if mode_of(model) != "exact":
        raise ValueError(f"The vision tower is already in mode {mode_of(model)!r}; load the model again for another")
    tower = model if isinstance(model, VisionTransformer) else model.vision
    if mode == "exact":
        return model
    if mode.startswith("onnx"):
        from .onnx_runtime import OnnxVisionTower

        if isinstance(model, VisionTransformer):
            raise ValueError("ONNX modes replace a DualEncoder's vision tower; for a tower alone use "
                             "vlm_vision.inference.OnnxVisionTower.from_tower")
        model.vision = OnnxVisionTower.from_tower(tower, int8=mode == "onnx-int8")
        return model
    if mode == "int8":
        quantize_int8(tower)
    compile_tower(tower)
    tower.mode = mode
    return model


def mode_of(model: DualEncoder | VisionTransformer) -> str:
    """The mode `model`'s vision tower runs in ("exact" until `optimize` changes it)."""
    tower = model if isinstance(model, VisionTransformer) else model.vision
    return getattr(tower, "mode", "exact")


def describe(model: DualEncoder | VisionTransformer) -> str:
    """What produced a model's image embeddings, e.g. "exact bfloat16" or "int8 float32": the index records it."""
    tower = model if isinstance(model, VisionTransformer) else model.vision
    return f"{mode_of(model)} {str(tower.dtype).removeprefix('torch.')}"


def compile_tower(tower: VisionTransformer) -> None:
    """Compile `tower.forward` in place (its state_dict keys stay as they are), freezing weights for inference.

    The batch dimension is dynamic from the first call, so the last, shorter batch of a job reuses the code."""
    int8_available()  # inductor imports torchao where installed: import it here, quietly
    tower.compile(dynamic=True, options={"freezing": True})
