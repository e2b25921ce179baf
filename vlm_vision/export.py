"""ONNX export of a SigLIP checkpoint's towers, for ONNX Runtime and the other runtimes that read ONNX.

The folder is laid out as transformers.js and optimum lay out theirs: a normal checkpoint (config, weights,
tokenizer, preprocessor config), and beside it `onnx/vision_model.onnx` (pixel_values -> pooler_output,
last_hidden_state) and, for a dual encoder, `onnx/text_model.onnx` (input_ids -> pooler_output,
last_hidden_state). The batch is dynamic; the image size and the text length are the checkpoint's. A SigLIP 2
NaFlex tower's graph takes transformers' three inputs (pixel_values, pixel_attention_mask, spatial_shapes), with
the number of patches dynamic too. As in transformers, embeddings are L2-normalised outside the graphs and text is
padded to the full context.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .model import VisionTransformer
from .quiet import quiet_loggers

if TYPE_CHECKING:
    from .model import DualEncoder  # imports transformers: not at import time

logger = logging.getLogger(__name__)

ONNX_FOLDER = "onnx"
VISION_FILE = "vision_model.onnx"
TEXT_FILE = "text_model.onnx"
OUTPUT_NAMES = ["pooler_output", "last_hidden_state"]


class _TowerOutputs(nn.Module):
    """A tower taking its inputs in order and returning the tuple (pooler_output, last_hidden_state), as an
    exported graph does."""

    def __init__(self, tower: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.tower, self.input_names = tower, input_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower(**dict(zip(self.input_names, inputs)))
        return out.pooler_output, out.last_hidden_state


def vision_example(tower: VisionTransformer) -> dict[str, torch.Tensor]:
    """Inputs to trace a vision tower with: two images (NaFlex: two of different patch grids, one with padding)."""
    config = tower.config
    if not config.naflex:
        return {"pixel_values": torch.zeros(2, config.num_channels, config.image_size, config.image_size)}
    N, g = config.num_patches, config.grid_size
    shapes = torch.tensor([[g, g], [1, N // 2]])
    mask = (torch.arange(N) < shapes.prod(-1, keepdim=True)).to(torch.int32)
    return {"pixel_values": torch.zeros(2, N, config.num_channels * config.patch_size ** 2),
            "pixel_attention_mask": mask, "spatial_shapes": shapes}


def export_onnx(model: DualEncoder | VisionTransformer, folder: str | Path, opset: int | None = None) -> list[Path]:
    """Write `model` as a checkpoint into `folder` and its towers as ONNX graphs into `folder/onnx`; returns those.

    The graphs hold float32 weights on the CPU, whatever the model's dtype and device."""
    _require_onnx()
    folder = Path(folder)
    model.save_pretrained(folder)
    vision = model if isinstance(model, VisionTransformer) else model.vision
    towers = [(vision, vision_example(vision), VISION_FILE)]
    if not isinstance(model, VisionTransformer):  # a DualEncoder
        ids = model.tokenize(["a", "b"])  # (2, context length), padded as SigLIP was trained
        towers.append((model.text, {"input_ids": ids}, TEXT_FILE))
    return [export_tower(tower, example, folder / ONNX_FOLDER / filename, opset) for tower, example, filename in towers]


def export_tower(tower: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int | None = None) -> Path:
    """Write one tower as an ONNX graph from the inputs named in `example` to (pooler_output, last_hidden_state).

    The batch is dynamic, and so is the number of patches of NaFlex inputs (the second dimension of inputs that
    come with `spatial_shapes`)."""
    _require_onnx()
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _TowerOutputs(copy.deepcopy(tower).float().cpu(), list(example)).eval()  # `tower` stays as it is
    batch, patches = torch.export.Dim("batch"), torch.export.Dim("patches")
    naflex = "spatial_shapes" in example
    dynamic = tuple({0: batch, 1: patches} if naflex and name != "spatial_shapes" else {0: batch} for name in example)
    with _quiet_exporter():
        torch.onnx.export(graph, tuple(v.cpu() for v in example.values()), path, input_names=list(example),
                          output_names=OUTPUT_NAMES, dynamic_shapes={"inputs": dynamic}, opset_version=opset,
                          dynamo=True, external_data=False)  # one file per tower: up to 2 GB, So400m's included
    logger.info("Wrote %s", path)
    return path


def _require_onnx() -> None:
    try:
        import onnxscript  # noqa: F401 (torch's ONNX exporter needs it, and onnx)
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx extra: pip install 'vlm-vision[onnx]'") from e


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch's exporter prints its progress, warns about torchvision ops it can't register (not installed here),
    raises a FutureWarning from its own pytree use, and warns that it merged the dynamic axes that one name marks
    on several inputs (the batch of a NaFlex tower's three): none of it is the user's to act on."""
    with redirect_stdout(io.StringIO()), quiet_loggers("torch.onnx", warning_types=(FutureWarning,)), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="# The axis name: .* will not be used", category=UserWarning)
        yield
