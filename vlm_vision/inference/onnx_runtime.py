"""The vision tower run by ONNX Runtime: the "onnx" and "onnx-int8" modes.

`OnnxVisionTower` is called like `VisionTransformer` and returns the same `pooler_output` and
`last_hidden_state`, so a DualEncoder, the photo index and the app use it unchanged. The graph comes from
`vlm_vision.export` and is cached by the weights' hash. int8 is ONNX Runtime's dynamic quantisation in its
accurate settings: weights per output channel, and on a CPU without VNNI a reduced range (with ORT's defaults
there, the u8 x s8 instruction saturates: cosine 0.90 to float32 measured on an AVX2 EPYC). Its activations get one
scale per tensor, coarser than the torch int8 mode's per-token scales, so it keeps one block more in float.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..cache import cache_dir
from ..export import export_tower, vision_example
from ..model import VisionConfig, VisionOutput, VisionTransformer
from ..quiet import quiet_loggers

logger = logging.getLogger(__name__)

# Kept in float: with the first block and the head alone, 98.7% of the embedded model's zero-shot answers over
# 1,906 emoji names stayed the same on 300 images; with the second block as well, 99.0% (2026-12-08). The patch
# embedding too, as in the torch int8 mode.
FLOAT_LAYERS = ("patch_embed.", "blocks.0.", "blocks.1.", "head.")
INT8_SCHEME = "int8-float-blocks-0-1"  # in the cached graph's name: a new scheme never loads an old graph


class OnnxVisionTower(nn.Module):
    """A SigLIP vision tower in an ONNX Runtime session (CPU), with VisionTransformer's call and outputs."""

    def __init__(self, path: str | Path, config: VisionConfig, *, mode: str = "onnx",
                 exact: VisionTransformer | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.exact = exact  # answers what the graph doesn't return (attention weights, hidden states)
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config, self.path, self.mode = config, Path(path), mode

    dtype = torch.float32  # the graph's precision, whatever the source tower's
    device = torch.device("cpu")

    def forward(self, pixel_values: torch.Tensor, *, pixel_attention_mask: torch.Tensor | None = None,
                spatial_shapes: torch.Tensor | None = None, **unsupported: bool) -> VisionOutput:
        """As `VisionTransformer.forward`: pixel values, or a NaFlex tower's patches with their mask and shapes."""
        naflex = {} if spatial_shapes is None else {"pixel_attention_mask": pixel_attention_mask,
                                                    "spatial_shapes": spatial_shapes}
        asked = [k for k, v in unsupported.items() if v]
        if asked and self.exact is None:
            raise ValueError(f"The ONNX graph returns pooled and last hidden states only, not {asked}: use mode "
                             f"'exact' for those")
        if asked:
            device = self.exact.device
            return self.exact(pixel_values.to(device), **{k: v.to(device) for k, v in naflex.items()}, **unsupported)
        feed = {"pixel_values": pixel_values.float().cpu().numpy()}
        if naflex:  # the graph takes them in the dtypes it was traced with: int32 mask, int64 shapes
            feed |= {"pixel_attention_mask": pixel_attention_mask.to(torch.int32).cpu().numpy(),
                     "spatial_shapes": spatial_shapes.to(torch.int64).cpu().numpy()}
        pooled, last = self.session.run(None, feed)
        return VisionOutput(last_hidden_state=torch.from_numpy(last), pooler_output=torch.from_numpy(pooled))

    @classmethod
    def from_tower(cls, tower: VisionTransformer, *, int8: bool = False) -> OnnxVisionTower:
        """Export `tower` (or find its earlier export in the cache) and open it, quantised to int8 if asked."""
        folder = cache_dir("onnx") / _weights_hash(tower)
        graph = folder / "vision_model.onnx"
        if not graph.is_file():
            partial = graph.with_name(f"partial-{os.getpid()}-{graph.name}")
            export_tower(tower, vision_example(tower), partial)
            partial.replace(graph)  # whole or absent: a killed export leaves no half-written graph to load
        if int8:
            # The range is this CPU's choice: a cache shared with another kind of CPU keeps both graphs.
            quantized = folder / f"vision_model.{INT8_SCHEME}{'-reduced-range' if _reduce_range() else ''}.onnx"
            if not quantized.is_file():
                quantize_int8(graph, quantized)
            graph = quantized
        return cls(graph, tower.config, mode="onnx-int8" if int8 else "onnx", exact=tower)


def quantize_int8(graph: Path, out: Path) -> Path:
    """ORT dynamic int8 of the linear layers outside `FLOAT_LAYERS`, per-channel; reduced range without VNNI."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(graph))
    linear = [node.name for node in model.graph.node
              if node.op_type in ("MatMul", "Gemm") and _linear_module(node) is not None
              and not _linear_module(node).startswith(FLOAT_LAYERS)]
    reduce_range = _reduce_range()
    partial = out.with_name(f"partial-{os.getpid()}-{out.name}")
    with quiet_loggers("root"):  # ORT's quantiser logs advice about pre-processing through the root logger
        quantize_dynamic(graph, partial, weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                         nodes_to_quantize=linear)
    partial.replace(out)
    logger.info("Wrote %s (%d linear layers in int8, reduce_range=%s)", out, len(linear), reduce_range)
    return out


def _reduce_range() -> bool:
    """Without VNNI, x86 multiplies u8 by s8 in pairs that saturate at full range: ORT's documented caveat."""
    return not torch.cpu._is_vnni_supported()


def _linear_module(node) -> str | None:
    """The tower's module name ("blocks.3.mlp.fc1") of an exported nn.Linear's MatMul, from the exporter's notes."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    for scope in namespace.split("/"):
        name, _, kind = scope.partition(": ")
        if kind == "torch.nn.modules.linear.Linear" and name.startswith("tower."):
            return name.removeprefix("tower.") + "."
    return None


def _weights_hash(tower: VisionTransformer) -> str:
    digest = hashlib.sha256(repr(tower.config).encode())
    for key, value in sorted(tower.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("The ONNX modes need ONNX Runtime: pip install 'vlm-vision[onnx]'") from e
    return onnxruntime
