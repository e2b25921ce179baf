"""Accuracy of the inference modes against exact float32: the embedded model on the emoji eval set.

    python benchmarks/mode_accuracy.py

For each mode: the worst image's cosine to exact float32, the share of zero-shot answers (over the 1,906 emoji
names) that stay the same, and text-to-image retrieval overlap (each eval caption's name queries the 300 images;
the share of the exact top 10 kept, averaged). The int8 rows run both ranges: the full one that a VNNI CPU uses
and the reduced one for CPUs without VNNI, forced here by mocking the VNNI check. Run on a VNNI CPU, the reduced
rows are the numbers a CPU without VNNI computes, without the saturation the reduced range is there to avoid.
torchao runs uncompiled here; `optimize(..., "int8")` compiles the same layers.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from vlm_vision import DualEncoder, optimize
from vlm_vision.inference import OnnxVisionTower, quantize_int8
from vlm_vision.inference.onnx_runtime import quantize_int8 as quantize_onnx_int8
from vlm_vision.training import read_records

EVAL = Path(__file__).resolve().parents[1] / "data" / "emoji-eval"


def main() -> None:
    model = DualEncoder.from_pretrained(dtype="float32")
    paths = [r.path for r in read_records(EVAL / "twitter" / "captions.jsonl")]
    names = model.encode_texts([n.strip() for n in (EVAL / "labels.txt").read_text().splitlines() if n.strip()])
    pixels = model.processor(paths)
    exact = model.encode_images(pixels)
    answers = (exact @ names.T).argmax(1)
    queries = names[answers.unique()]
    exact_top = (queries @ exact.T).topk(10).indices

    def row(name: str, vectors: torch.Tensor) -> None:
        agreement = ((vectors @ names.T).argmax(1) == answers).float().mean().item()
        top = (queries @ vectors.T).topk(10).indices
        overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact_top, top)) / top.numel()
        print(f"| {name} | {F.cosine_similarity(vectors, exact).min():.4f} | {agreement:.1%} | {overlap:.3f} |",
              flush=True)

    print(f"# embedded model, {len(paths)} images, {len(names)} names, torch {torch.__version__}, "
          f"VNNI {'yes' if torch.cpu._is_vnni_supported() else 'no'}")
    print("| mode | cosine, worst image | zero-shot top-1 agreement | top-10 retrieval overlap |")
    print("|---|---|---|---|")
    row("exact bfloat16", DualEncoder.from_pretrained(dtype="bfloat16").encode_images(pixels))
    row("onnx float32", optimize(DualEncoder.from_pretrained(dtype="float32"), "onnx").encode_images(pixels))
    for vnni in (True, False):
        ranges = "full range" if vnni else "reduced range"
        with mock.patch("torchao.utils._cpu_is_vnni_supported", lambda vnni=vnni: vnni):
            tower = copy.deepcopy(model.vision)
            quantize_int8(tower)
            with torch.inference_mode():
                row(f"int8, {ranges}", F.normalize(tower(pixels).pooler_output, dim=-1))
        with mock.patch.object(torch.cpu, "_is_vnni_supported", lambda vnni=vnni: vnni), \
                tempfile.TemporaryDirectory() as tmp:
            graph = quantize_onnx_int8(OnnxVisionTower.from_tower(model.vision).path, Path(tmp) / "int8.onnx")
            onnx = OnnxVisionTower(graph, model.vision.config)
            row(f"onnx-int8, {ranges}", F.normalize(onnx(pixels).pooler_output, dim=-1))


if __name__ == "__main__":
    main()
