"""notebooks/zero_shot_eval.ipynb runs top to bottom, offline, on a tiny random checkpoint.

Parameters are injected as papermill does (a cell after the one tagged `parameters`).
The notebook itself asserts parity with transformers, so a parity break fails this test.
"""

import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from tests.helpers.checkpoints import siglip_checkpoint
from vlm_vision.model.dual_encoder import DualEncoder
from vlm_vision.training.data import read_records
from vlm_vision.training.evaluate import EMOJI_TEMPLATES, zero_shot

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "zero_shot_eval.ipynb"
DATA = ROOT / "data" / "emoji-eval" / "twitter" / "captions.jsonl"
LIMIT = 40


def inject_parameters(notebook: nbformat.NotebookNode, source: str) -> None:
    """Insert `source` as a cell right after the cell tagged `parameters`, as papermill does."""
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    notebook.cells.insert(tagged[0] + 1, cell)


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """All printed text of an executed notebook, and the MIME types of its rich outputs."""
    text, mimes = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                mimes.extend(output.data)
    return "".join(text), mimes


@pytest.mark.timeout(120)
def test_zero_shot_notebook_runs(tmp_path, monkeypatch):
    model = tmp_path / "model"
    siglip_checkpoint(model, vision=dict(image_size=64, patch_size=8))  # 64 px, like the emoji
    # A kernel spec for this interpreter, ahead of any user-wide "python3" on JUPYTER_PATH.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "commit the notebook with its outputs cleared"
    inject_parameters(notebook, "\n".join([
        "import sys",
        f"assert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test environment'",
        f"MODEL = {str(model)!r}",
        f"DATA = {str(DATA)!r}",
        f"LIMIT = {LIMIT}",
        "SUBSET = 8",
    ]))
    NotebookClient(notebook, kernel_name="python3", timeout=60,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    text, mimes = outputs(notebook)
    records = read_records(DATA)[:LIMIT]
    classes = (ROOT / "data" / "emoji-eval" / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1]
    expected = zero_shot(DualEncoder.from_pretrained(model), [r.path for r in records], [r.label for r in records],
                         class_names=classes, templates=EMOJI_TEMPLATES)
    assert expected.num_classes == 1906  # the notebook's default CLASSES: every emoji
    assert (f"top-1: {expected.top1:.2%}  top-5: {expected.top5:.2%}  "
            f"({LIMIT} images, {expected.num_classes} classes)") in text
    assert "max |score difference|" in text  # the transformers comparison ran (and its assert held)
    assert "image/png" in mimes

