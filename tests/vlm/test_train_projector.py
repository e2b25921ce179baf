"""Projector / VLM training: stage 1 trains only the projector, stage 2 the LM too, the loss falls,
resume is exact, torchrun matches one process, and the output loads and generates."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers.lm import tiny_llama, tiny_tokenizer
from tests.training import test_train
from vlm_vision.training.data import CaptionRecord
from vlm_vision.vlm.model import IGNORE_INDEX, VisionLanguageModel
from vlm_vision.vlm.train import (
    TRAINING_CONFIG,
    ProjectorTrainConfig,
    build_model,
    caption_token_stats,
    evaluate_captions,
    load_records,
    main,
    parse_args,
    train,
    train_lm_tokenizer,
)

shapes_data = test_train.shapes_data  # the fixture: 32 PNGs of coloured shapes, captions in a JSONL file
TINY_LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second intra-op thread only adds OpenMP synchronisation (see tests/test_vlm.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm_json(tmp_path_factory):
    file = tmp_path_factory.mktemp("lm") / "tiny_llama.json"
    file.write_text(json.dumps(TINY_LM))
    return file


def tiny_config(data, vision, lm_json, out, **overrides) -> ProjectorTrainConfig:
    return ProjectorTrainConfig(**{**dict(
        data=(str(data),), vision=str(vision), lm_config=str(lm_json), out=str(out), vocab_size=60,
        captions="first", steps=6, batch_size=8, lr=3e-3, lm_lr=3e-3, warmup_steps=2, save_every=3, workers=0,
        bf16=False, augment=True, seed=0,
    ), **overrides})


def changed(before: dict, after: dict, prefix: str) -> dict[str, bool]:
    return {k: not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)}


def test_caption_token_stats_by_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 9.0, 9.0]]])  # (1, 4, 3)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0, 2]])  # positions 1 and 2 predict tokens 0 and 2
    loss, correct, count = caption_token_stats(logits, labels)
    expected = -torch.log_softmax(torch.tensor([2.0, 0, 0]), 0)[0] - torch.log_softmax(torch.tensor([0, 1.0, 0]), 0)[2]
    torch.testing.assert_close(loss, expected)
    assert (correct.item(), count.item()) == (1, 2)


def test_tokenizer_round_trips_names(tmp_path):
    names = ["grinning face", "flag: United States", "woman office worker: medium-light skin tone", "piñata"]
    train_lm_tokenizer(names * 3 + ["name:"], tmp_path, vocab_size=80)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for name in names:
        ids = tokenizer(name, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == name
    ids = tokenizer("<image> name:").input_ids
    assert ids[:2] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("<image>")]


def test_stage_2_trains_lm_and_projector_then_stage_1_the_projector_alone(shapes_data, tiny_siglip, lm_json,
                                                                         tmp_path):
    """A new LM learns the captions with a new projector (stage 2 from scratch, as the emoji demo); then a fresh
    projector learns to drive that LM, frozen (stage 1, as LLaVA does on a pretrained LM)."""
    vision = tiny_siglip[0]
    cfg = tiny_config(shapes_data, vision, lm_json, tmp_path / "s2", steps=60, batch_size=16, warmup_steps=3,
                      lr=1e-2, lm_lr=1e-2,
                      save_every=100, augment=False, train_lm=True)
    stage2 = train(cfg, progress=False)
    before = build_model(cfg, load_records(cfg)).state_dict()  # the same seeded initialisation
    after = stage2.model.state_dict()
    assert all(changed(before, after, "projector.").values())
    assert all(changed(before, after, "language_model.").values())
    assert not any(changed(before, after, "vision.").values())
    losses = [stage2.losses[s] for s in sorted(stage2.losses)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses

    folder = stage2.model_dir
    assert json.loads((folder / TRAINING_CONFIG).read_text())["prompt"] == "<image> name:"
    assert (folder / "language_model").is_dir() and not (folder / "vision").exists()  # trained: written
    loaded = VisionLanguageModel.from_pretrained(folder)
    assert loaded.prompt == cfg.prompt  # saved with the model: generate uses it when given no prompt
    batch = loaded.prepare_inputs(torch.randn(2, 3, 32, 32), cfg.prompt, ["a red circle", "a blue cross"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, stage2.model(**batch).logits, rtol=0, atol=1e-5)
    records = load_records(cfg)[:8]
    result = evaluate_captions(loaded, records, cfg.prompt, batch_size=5)
    assert result.num_images == 8 and len(result.examples) == 8
    assert result.exact_match == np.mean([generated == name for name, generated in result.examples])
    assert 0.3 < result.token_accuracy <= 1.0

    lm = folder / "language_model"
    AutoTokenizer.from_pretrained(folder / "tokenizer").save_pretrained(lm)  # an LM folder with its tokenizer
    cfg1 = dataclasses.replace(cfg, out=str(tmp_path / "s1"), lm_config="", lm=str(lm), train_lm=False, seed=1)
    stage1 = train(cfg1, progress=False)
    before, after = build_model(cfg1, load_records(cfg1)).state_dict(), stage1.model.state_dict()
    assert all(changed(before, after, "projector.").values())
    assert not any(changed(before, after, "language_model.").values())
    assert not any(changed(before, after, "vision.").values())
    losses = [stage1.losses[s] for s in sorted(stage1.losses)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert json.loads((stage1.model_dir / "vlm_config.json").read_text())["language_model"] == str(lm)

    # Stage 2 again from stage 1's folder (--init), written whole with --save-vision.
    cfg3 = dataclasses.replace(cfg1, out=str(tmp_path / "s3"), lm="", vision="", init=str(stage1.model_dir),
                               train_lm=True, save_vision=True, steps=4)
    stage3 = train(cfg3, progress=False)
    after3 = stage3.model.state_dict()
    assert all(changed(after, after3, "language_model.").values())
    assert not any(changed(after, after3, "vision.").values())
    assert {"vision", "language_model", "tokenizer"} <= {p.name for p in stage3.model_dir.iterdir()}
    VisionLanguageModel.from_pretrained(stage3.model_dir).generate(torch.randn(1, 3, 32, 32), cfg.prompt)


def test_resume_continues_exactly(shapes_data, tiny_siglip, lm_json, tmp_path):
    whole, second = test_train.train_whole_and_resumed(
        train, tiny_config(shapes_data, tiny_siglip[0], lm_json, tmp_path / "whole", train_lm=True),
        tiny_config(shapes_data, tiny_siglip[0], lm_json, tmp_path / "split", train_lm=True))
    expected = whole.model.state_dict()
    for key, tensor in second.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], atol=1e-6, rtol=0)


def test_existing_lm_by_name_is_referred_to_and_generates(shapes_data, tiny_siglip, tmp_path):
    tokenizer = tiny_tokenizer(image_token=None)  # as most LMs: no <image> yet
    tiny_llama(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    cfg = tiny_config(shapes_data, tiny_siglip[0], "", tmp_path / "run", lm_config="", lm=str(tmp_path / "lm"),
                      projector="pixel_shuffle", feature_layer=-2, steps=2)
    result = train(cfg, progress=False)
    saved = json.loads((result.model_dir / "vlm_config.json").read_text())
    assert saved["language_model"] == str(tmp_path / "lm") and saved["vision"] == str(tiny_siglip[0])
    assert not (result.model_dir / "language_model").exists()  # frozen and on disk: referred to by path
    loaded = VisionLanguageModel.from_pretrained(result.model_dir)
    assert loaded.num_image_tokens == 4 and loaded.projector.config.kind == "pixel_shuffle"
    generated = loaded.generate(torch.randn(2, 3, 32, 32), cfg.prompt, max_new_tokens=3, min_new_tokens=3)
    assert len(generated) == 2 and all(isinstance(g, str) for g in generated)


def test_torchrun_two_processes_match_one(shapes_data, tiny_siglip, lm_json, tmp_path):
    """DDP over 2 gloo processes, each with half of every batch, takes the same steps as one process."""
    single = train(tiny_config(shapes_data, tiny_siglip[0], lm_json, tmp_path / "one", steps=4, train_lm=True),
                   progress=False)
    cfg = tiny_config(shapes_data, tiny_siglip[0], lm_json, tmp_path / "two", steps=4, train_lm=True)
    (tmp_path / "run.json").write_text(json.dumps(dataclasses.asdict(cfg) | {"data": list(cfg.data)}))
    test_train.run_torchrun("vlm_vision.vlm.train", tmp_path / "run.json")
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    for step in range(1, 5):
        assert state["losses"][step] == pytest.approx(single.losses[step], abs=1e-5), step
    two = VisionLanguageModel.from_pretrained(tmp_path / "two" / "model")
    for key, tensor in single.model.language_model.state_dict().items():
        torch.testing.assert_close(two.language_model.state_dict()[key], tensor, atol=1e-5, rtol=0)


def test_config_errors_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit, match="exactly one language model: .* got none"):
        parse_args(["--data", "x"])
    with pytest.raises(SystemExit, match="got --lm, --lm-config"):
        parse_args(["--data", "x", "--lm", "gpt2", "--lm-config", "l.json"])
    with pytest.raises(SystemExit, match=r"brings its own vision tower and projector; drop \['--projector'\]"):
        parse_args(["--data", "x", "--init", "runs/s1/model", "--projector", "linear"])
    with pytest.raises(SystemExit, match="Unknown projector type: 'mlp3x'"):
        parse_args(["--data", "x", "--lm", "gpt2", "--projector", "mlp3x"])
    cfg, stop_at = parse_args(["--data", "a.jsonl", "b", "--lm", "gpt2", "--train-lm", "--lm-lr", "1e-4",
                               "--stop-at", "5"])
    assert (cfg.data, cfg.train_lm, cfg.lm_lr, cfg.lr, stop_at) == (("a.jsonl", "b"), True, 1e-4, 1e-3, 5)
    for argv in (["--help"], ["evaluate", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "example" in capsys.readouterr().out


def test_first_captions_only(shapes_data, lm_json):
    cfg = tiny_config(shapes_data, "", lm_json, "unused", captions="first")
    assert all(r.alt_captions == () for r in load_records(cfg))
    assert any(r.alt_captions for r in load_records(dataclasses.replace(cfg, captions="all")))
    assert isinstance(load_records(cfg)[0], CaptionRecord)
