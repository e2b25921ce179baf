"""The wheel, as a user gets it: built from the repository, installed into a fresh virtual environment, and used
from a folder outside the tree, offline, with the embedded default model and the console scripts.

The new environment sees this one's packages (torch, transformers, ...) through a .pth file, as
`--system-site-packages` would; nothing is downloaded. vlm_vision itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MAX_WHEEL_MB = 60
LABELS = ["red heart", "blue heart", "pizza", "rocket", "cat face"]
# Run in the installed environment: the default model's logits for the samples, and where everything came from.
PROBE = """
import json, sys, torch
torch.set_num_threads(1)
import vlm_vision
from vlm_vision import DualEncoder, VisionLanguageModel, VisionTransformer
from vlm_vision.app import build_demo
from vlm_vision.checkpoints import DEFAULT_CAPTIONER, SAMPLES
from vlm_vision.index import PhotoIndex
from vlm_vision.training import class_embeddings, metrics, read_records  # the notebook's API
model = DualEncoder.from_pretrained()
images = sorted(SAMPLES.glob("*.png"))
torch.save(model.logits(images, json.loads(sys.argv[1])), sys.argv[2])
print(json.dumps({"package": vlm_vision.__file__, "samples": str(SAMPLES), "images": [p.name for p in images],
                  "captioner": VisionLanguageModel.from_pretrained().generate([SAMPLES / "rocket.png"]),
                  "tower": VisionTransformer.from_pretrained().config.hidden_size,
                  "captioner_folder": str(DEFAULT_CAPTIONER)}))
"""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built without build isolation (offline) from a copy of the tree, so the checkout stays clean."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "benchmarks"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp / "dist"), str(source)], cwd=tmp)
    (built,) = (tmp / "dist").glob("vlm_vision-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(bin folder, environment) of a new venv holding the wheel, with this environment's packages visible."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    new_python = venv / "bin" / "python"
    new_site = Path(run([str(new_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=venv).strip())
    (new_site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, transformers, pip, ...
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HF_HUB_OFFLINE": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VLM_INDEX_DB": str(venv / "unused-default.db")}
    # --force-reinstall: this environment's editable vlm-vision is visible too; the wheel goes into the new one.
    run([str(new_python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
         str(wheel)], cwd=venv, env=env)
    return venv / "bin", env


@pytest.mark.slow
def test_the_wheel_holds_one_import_name_and_the_embedded_models(wheel):
    assert wheel.stat().st_size < MAX_WHEEL_MB * 2**20, f"{wheel.stat().st_size / 2**20:.1f} MiB"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/RECORD")).rpartition("/")[0]
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert top_level == ["vlm_vision"]
    assert {n.split("/")[0] for n in names} == {"vlm_vision", info}
    for expected in ("vlm_vision/index/photo_index.py", "vlm_vision/app/ui.py", "vlm_vision/model/dual_encoder.py",
                     "vlm_vision/data/models/siglip-emoji/model.safetensors",
                     "vlm_vision/data/models/emoji-captioner/language_model/config.json",
                     "vlm_vision/data/samples/pizza.png"):
        assert expected in names
    assert not [n for n in names if n.startswith("vlm_vision/data/emoji-eval")]  # the eval set stays in the repo
    for script in ("vlm-vision", "vlm-index", "vlm-app"):
        assert f"{script} = " in entry_points


@pytest.mark.slow
def test_the_installed_wheel_works_outside_the_tree(installed, tmp_path):
    bin_dir, env = installed
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for script in ("vlm-vision", "vlm-index", "vlm-app"):
        assert "usage:" in run([str(bin_dir / script), "--help"], cwd=outside, env=env)

    probe = json.loads(run([str(bin_dir / "python"), "-c", PROBE, json.dumps(LABELS), str(outside / "logits.pt")],
                           cwd=outside, env=env))
    site = Path(probe["package"]).parent.parent
    assert site.is_relative_to(bin_dir.parent) and Path(probe["samples"]).is_relative_to(site)
    assert probe["captioner"] == ["rocket"] and probe["tower"] == 192
    assert Path(probe["captioner_folder"]).is_relative_to(site)

    from vlm_vision import DualEncoder
    from vlm_vision.checkpoints import SAMPLES

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = [SAMPLES / name for name in probe["images"]]
        expected = DualEncoder.from_pretrained().logits(images, LABELS)  # the source tree's, in this process
    finally:
        torch.set_num_threads(threads)
    assert len(images) >= 10
    assert torch.equal(torch.load(outside / "logits.pt"), expected)

    photos = outside / "photos"
    shutil.copytree(probe["samples"], photos, ignore=shutil.ignore_patterns("*.md", "*.txt"))
    db = str(outside / "photos.db")
    run([str(bin_dir / "vlm-index"), "build", str(photos), "--db", db, "--workers", "0"], cwd=outside, env=env)
    stats = json.loads(run([str(bin_dir / "vlm-index"), "stats", "--db", db, "--json"], cwd=outside, env=env))
    assert (stats["files"], stats["model"]) == (len(images), "default")
    found = run([str(bin_dir / "vlm-index"), "search", "pizza", "--db", db, "-k", "1", "--json"], cwd=outside, env=env)
    assert Path(json.loads(found)["path"]).name == "pizza.png", found
