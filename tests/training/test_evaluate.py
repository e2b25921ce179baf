"""Zero-shot metrics: recall on known score matrices, and the pipeline against a naive recomputation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlm_vision.model.dual_encoder import DualEncoder
from vlm_vision.training.evaluate import GroupAccuracy, class_embeddings, group_accuracy, main, recall_at, zero_shot


def test_recall_on_a_known_matrix():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.6, 0.4]])
    targets = torch.tensor([0, 1, 2])
    assert recall_at(scores, targets, 1) == pytest.approx(1 / 3)  # only row 0 ranks its target first
    assert recall_at(scores, targets, 2) == pytest.approx(1.0)
    assert recall_at(scores, targets, 10) == pytest.approx(1.0)  # k beyond the columns is clipped


def test_group_accuracy_on_a_known_matrix():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # class 0 first: a top-1 hit
                           [0.9, 0.8, 0.7, 0.6, 0.5, 0.0],  # class 5 last: a top-5 miss
                           [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # class 0 second: a top-5 hit
                           [0.0, 0.0, 0.9, 0.0, 0.0, 0.0]])  # class 2 first
    groups = group_accuracy(scores, torch.tensor([0, 5, 0, 2]), ["faces", "flags", "faces", "flags"])
    assert groups == {"flags": GroupAccuracy(2, 0.5, 0.5, 1), "faces": GroupAccuracy(2, 0.5, 1.0, 0)}  # misses first
    assert list(groups) == ["flags", "faces"]
    with pytest.raises(ValueError, match="3 group names but 4 images"):
        group_accuracy(scores, torch.tensor([0, 5, 0, 2]), ["a", "b", "c"])


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(1)
    labels = ["red cat", "dog", "tree", "blue car", "dog", "red cat"]
    paths = []
    for i in range(len(labels)):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths, labels


def test_zero_shot_matches_a_naive_computation(tiny_siglip, labelled_images):
    model = DualEncoder.from_pretrained(tiny_siglip[0])
    paths, labels = labelled_images
    templates = ("{}", "a photo of a {}.")
    result = zero_shot(model, paths, labels, templates=templates)
    classes = list(dict.fromkeys(labels))
    naive_classes = []
    for name in classes:  # mean of normalised prompt embeddings, renormalised
        prompts = torch.stack([model.encode_texts([t.format(name)])[0] for t in templates])
        naive_classes.append(F.normalize(prompts.mean(0), dim=0))
    naive_classes = torch.stack(naive_classes)
    torch.testing.assert_close(class_embeddings(model, classes, templates), naive_classes, atol=1e-6, rtol=0)
    ranks = []
    for path, label in zip(paths, labels):
        scores = model.encode_images([path])[0] @ naive_classes.T
        ranks.append(int((scores > scores[classes.index(label)]).sum()))
    assert result.top1 == pytest.approx(np.mean([r < 1 for r in ranks]))
    assert result.top5 == pytest.approx(np.mean([r < 5 for r in ranks]))
    assert (result.num_images, result.num_classes) == (6, 4)
    assert result.text_to_image_r10 == 1.0  # 4 queried classes: every image is within the top 10
    with pytest.raises(ValueError, match="not among the class names"):
        zero_shot(model, paths, labels, class_names=["dog"])


def test_cli_prints_metrics(tiny_siglip, labelled_images, tmp_path, capsys):
    paths, labels = labelled_images
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"path": str(p), "caption": lb, "label": lb}) + "\n"
                            for p, lb in zip(paths, labels)))
    assert main(["--model", str(tiny_siglip[0]), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 6 and 0 <= metrics["top1"] <= metrics["top5"] <= 1


def test_cli_mistakes_are_messages_not_tracebacks(tiny_siglip, labelled_images, tmp_path, capsys):
    paths, labels = labelled_images
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"path": str(p), "caption": lb, "label": lb}) + "\n"
                            for p, lb in zip(paths, labels)))
    model = str(tiny_siglip[0])
    for args, message in [(["--model", str(tmp_path / "nope")], "No such checkpoint file or folder"),
                          (["--model", model, "--classes", str(tmp_path / "nope.txt")], "No such file"),
                          (["--model", model, "--classes", str(data)], "not among the class names"),
                          (["--model", model, "--templates", "{"], "needs one {} where the label goes"),
                          (["--model", model, "--templates", "{}", "no slot"], "got 'no slot'")]:
        assert main([*args, "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_per_group(tiny_siglip, labelled_images, tmp_path, capsys):
    """--by FIELD: top-1/top-5 per value of a JSONL key, matching the overall numbers; a record without it is an
    error naming the field."""
    paths, labels = labelled_images
    kinds = ["animal", "animal", "plant", "vehicle", "animal", "animal"]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"path": str(p), "caption": lb, "label": lb, "kind": k}) + "\n"
                            for p, lb, k in zip(paths, labels, kinds)))
    model = str(tiny_siglip[0])
    assert main(["--model", model, "--data", str(data), "--json", "--by", "kind"]) == 0
    result = json.loads(capsys.readouterr().out)
    groups = result["groups"]
    assert {g: v["images"] for g, v in groups.items()} == {"animal": 4, "plant": 1, "vehicle": 1}
    for metric in ("top1", "top5"):
        assert sum(v[metric] * v["images"] for v in groups.values()) == pytest.approx(result[metric] * 6)
    assert sum(v["top5_misses"] for v in groups.values()) == round((1 - result["top5"]) * 6)
    assert main(["--model", model, "--data", str(data), "--by", "kind"]) == 0
    table = capsys.readouterr().out
    assert "kind     images   top-1   top-5  top-5 misses" in table and "\nanimal        4" in table
    with pytest.raises(SystemExit):
        main(["--model", model, "--data", str(data), "--by", "colour"])
    assert "'colour' must be a non-empty string or a whole number for every record" in capsys.readouterr().err
