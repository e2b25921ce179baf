"""ONNX export of a SigLIP checkpoint's towers, for ONNX Runtime and the other runtimes that read ONNX.

The folder is laid out as transformers.js and optimum lay out theirs: a normal checkpoint (config, weights,
tokenizer, preprocessor config), and beside it `onnx/vision_model.onnx` (pixel_values -> pooler_output,
last_hidden_state) and, for a dual encoder, `onnx/text_model.onnx` (input_ids -> pooler_output,
last_hidden_state). The batch is dynamic; the image size and the text length are the checkpoint's. As in
transformers, embeddings are L2-normalised outside the graphs and text is padded to the full context.
"""

from __future__ import annotations

import copy
import io
import logging
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
    """A tower whose output is the tuple (pooler_output, last_hidden_state), as an exported graph returns it."""

    def __init__(self, tower: nn.Module, input_name: str) -> None:
        super().__init__()
        self.tower, self.input_name = tower, input_name

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower(**{self.input_name: inputs})
        return out.pooler_output, out.last_hidden_state


def export_onnx(model: DualEncoder | VisionTransformer, folder: str | Path, opset: int | None = None) -> list[Path]:
    """Write `model` as a checkpoint into `folder` and its towers as ONNX graphs into `folder/onnx`; returns those.

    The graphs hold float32 weights on the CPU, whatever the model's dtype and device."""
    _require_onnx()
    folder = Path(folder)
    model.save_pretrained(folder)
    vision = model if isinstance(model, VisionTransformer) else model.vision
    size = vision.config.image_size
    towers = [(vision, "pixel_values", torch.zeros(2, 3, size, size), VISION_FILE)]
    if not isinstance(model, VisionTransformer):  # a DualEncoder
        ids = model.tokenize(["a", "b"])  # (2, context length), padded as SigLIP was trained
        towers.append((model.text, "input_ids", ids, TEXT_FILE))
    return [export_tower(tower, input_name, example, folder / ONNX_FOLDER / filename, opset)
            for tower, input_name, example, filename in towers]


def export_tower(tower: nn.Module, input_name: str, example: torch.Tensor, path: Path, opset: int | None = None) -> Path:
    """Write one tower as an ONNX graph `input_name` -> (pooler_output, last_hidden_state), batch dynamic."""
    _require_onnx()
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _TowerOutputs(copy.deepcopy(tower).float().cpu(), input_name).eval()  # `tower` stays as it is
    with _quiet_exporter():
        torch.onnx.export(graph, (example.cpu(),), path, input_names=[input_name], output_names=OUTPUT_NAMES,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                          external_data=False)  # one file per tower: up to 2 GB, So400m's vision tower included
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
    and raises a FutureWarning from its own pytree use: none of it is the user's to act on."""
    with redirect_stdout(io.StringIO()), quiet_loggers("torch.onnx", warning_types=(FutureWarning,)):
        yield
