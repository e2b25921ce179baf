"""ONNX export: the graphs ONNX Runtime runs equal the exact towers (within 1e-4, at a batch size they were not
exported with), the folder beside them is a checkpoint that loads again, and the command line says what it did."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from vlm_vision import DualEncoder, VisionTransformer
from vlm_vision.__main__ import main
from vlm_vision.export import ONNX_FOLDER, OUTPUT_NAMES, TEXT_FILE, VISION_FILE, export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'vlm-vision[onnx]'")
pytest.importorskip("onnxscript", reason="the onnx extra: pip install 'vlm-vision[onnx]'")

ATOL = 1e-4


def run_graph(path, name: str, inputs: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [name]
    assert [o.name for o in session.get_outputs()] == OUTPUT_NAMES
    return session.run(None, {name: inputs.numpy()})


@pytest.fixture(scope="module")
def exported(tiny_siglip, tmp_path_factory):
    model = DualEncoder.from_pretrained(tiny_siglip[0])
    folder = tmp_path_factory.mktemp("exported")
    return model, folder, export_onnx(model, folder)


def test_graphs_equal_the_exact_towers_at_any_batch_size(exported):
    model, folder, written = exported
    assert written == [folder / ONNX_FOLDER / VISION_FILE, folder / ONNX_FOLDER / TEXT_FILE]
    size = model.vision.config.image_size
    pixels = torch.randn(3, 3, size, size)  # exported with a batch of 2
    ids = model.tokenize(["a red cat", "a dog", "two trees on a hill", "x"])
    with torch.inference_mode():
        vision, text = model.vision(pixels), model.text(input_ids=ids)
    for got, want in zip(run_graph(written[0], "pixel_values", pixels),
                         (vision.pooler_output, vision.last_hidden_state)):
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)
    for got, want in zip(run_graph(written[1], "input_ids", ids), (text.pooler_output, text.last_hidden_state)):
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)


def test_the_folder_is_a_checkpoint_that_loads_again(exported):
    model, folder, _ = exported
    again = DualEncoder.from_pretrained(folder)
    pixels = torch.randn(2, 3, model.vision.config.image_size, model.vision.config.image_size)
    assert torch.equal(again.logits(pixels, ["a cat", "a dog"]), model.logits(pixels, ["a cat", "a dog"]))


def test_a_vision_tower_alone_and_a_bf16_model(tiny_vision, tmp_path):
    tower = VisionTransformer.from_pretrained(tiny_vision[0], dtype=torch.bfloat16)
    (graph,) = export_onnx(tower, tmp_path)
    assert graph == tmp_path / ONNX_FOLDER / VISION_FILE and (tmp_path / "model.safetensors").is_file()
    assert tower.dtype == torch.bfloat16  # exported from a float32 copy; the model is left as it was
    pixels = torch.randn(1, 3, tower.config.image_size, tower.config.image_size)
    with torch.inference_mode():
        want = tower.float()(pixels).pooler_output
    np.testing.assert_allclose(run_graph(graph, "pixel_values", pixels)[0], want.numpy(), atol=ATOL, rtol=0)


def test_command_line(tiny_siglip, tmp_path, capsys, monkeypatch):
    assert main(["export", str(tmp_path / "out"), "--model", str(tiny_siglip[0])]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "out" / ONNX_FOLDER / f) for f in (VISION_FILE,
                                                                                                  TEXT_FILE)]
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "vlm-vision export siglip-onnx/ --model google/siglip-base-patch16-224" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as where the onnx extra is not installed
    assert main(["export", str(tmp_path / "again"), "--model", str(tiny_siglip[0])]) == 2
    assert "ONNX export needs the onnx extra: pip install 'vlm-vision[onnx]'" in capsys.readouterr().err
