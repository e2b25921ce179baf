"""`vlm-vision classify`: output, JSON, help text and friendly errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_vision.__main__ import main, split_labels
from vlm_vision.model.dual_encoder import DualEncoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_split_labels():
    assert split_labels(["cat, dog", "a red apple\nbanana,,", " "]) == ["cat", "dog", "a red apple", "banana"]


def test_classify_prints_ranked_probabilities(tiny_siglip, image, capsys):
    folder, _ = tiny_siglip
    code = main(["classify", str(image), "--labels", "red cat, dog", "--labels", "tree", "--model", str(folder)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image)
    expected = DualEncoder.from_pretrained(folder, dtype="auto").classify(image, ["red cat", "dog", "tree"])
    assert [line.split(maxsplit=1) for line in lines[1:]] == [[f"{p:.4f}", label] for label, p in expected]


def test_classify_json_and_top(tiny_siglip, image, capsys):
    folder, _ = tiny_siglip
    assert main(["classify", str(image), str(image), "--labels", "cat,dog,tree", "--model", str(folder),
                 "--json", "--top", "2", "--template", "a {}"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0] == rows[1]
    probabilities = [entry["probability"] for entry in rows[0]["labels"]]
    assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
    for top in ("0", "-1"):  # -1 used to drop the last label
        with pytest.raises(SystemExit):
            main(["classify", str(image), "--labels", "cat,dog", "--model", str(folder), "--top", top])
        assert "--top: must be at least 1" in capsys.readouterr().err


def test_errors_are_messages_not_tracebacks(tiny_siglip, tiny_vision, tmp_path, capsys):
    folder, _ = tiny_siglip
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert main(["classify", str(broken), "--labels", "cat", "--model", str(folder)]) == 2
    assert "error: Can't load image" in capsys.readouterr().err
    assert main(["classify", str(broken), "--labels", " , ", "--model", str(folder)]) == 2
    assert "--labels has no non-empty label" in capsys.readouterr().err
    assert main(["classify", str(broken), "--labels", "cat", "--model", str(tiny_vision[0])]) == 2
    assert "not a full SigLIP image-text checkpoint" in capsys.readouterr().err


def test_module_entry_point_and_help_example(tiny_siglip, image):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for command in (["classify", "--help"], ["--help"]):
        done = subprocess.run([sys.executable, "-m", "vlm_vision", *command], capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == 0 and "examples:" in done.stdout and '--template "{}"' in done.stdout
    done = subprocess.run([sys.executable, "-m", "vlm_vision", "classify", str(image), "--labels", "cat, dog",
                           "--model", str(tiny_siglip[0])], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(image) and len(done.stdout.splitlines()) == 3


def test_embedded_default_model_is_used_without_model(capsys):
    sample = ROOT / "data" / "samples" / "red_heart.png"
    assert main(["classify", str(sample), "--labels", "pizza, red heart, rocket", "--template", "{}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split(maxsplit=1)[1] == "red heart"
