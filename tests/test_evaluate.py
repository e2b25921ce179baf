"""Zero-shot metrics: recall on known score matrices, and the pipeline against a naive recomputation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlm_vision.dual_encoder import DualEncoder
from vlm_vision.evaluate import class_embeddings, main, recall_at, zero_shot


def test_recall_on_a_known_matrix():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.6, 0.4]])
    targets = torch.tensor([0, 1, 2])
    assert recall_at(scores, targets, 1) == pytest.approx(1 / 3)  # only row 0 ranks its target first
    assert recall_at(scores, targets, 2) == pytest.approx(1.0)
    assert recall_at(scores, targets, 10) == pytest.approx(1.0)  # k beyond the columns is clipped


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
