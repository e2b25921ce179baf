"""Training: the loss goes down, resume is exact, torchrun matches one process, the output loads everywhere."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoTokenizer, SiglipImageProcessorPil, SiglipModel

from vlm_vision.checkpoints import DEFAULT_MODEL
from vlm_vision.errors import CheckpointError
from vlm_vision.model.dual_encoder import DualEncoder
from vlm_vision.model.tokenizer import train_tokenizer
from vlm_vision.training import cli_config
from vlm_vision.training import train as train_module
from vlm_vision.training.augment import StyleAugment
from vlm_vision.training.batching import epoch_batches
from vlm_vision.training.train import TrainConfig, lr_factor, parse_args, train
from vlm_vision.vlm.train import ProjectorTrainConfig

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20)}
SHAPES = ("circle", "square", "triangle", "cross")


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory) -> Path:
    """32 real PNGs of coloured shapes, two of each, with captions in a JSONL file."""
    root = tmp_path_factory.mktemp("shapes")
    rows = []
    rng = np.random.default_rng(0)
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for copy in range(2):
                image = Image.new("RGB", (32, 32), "white")
                draw = ImageDraw.Draw(image)
                x, y = rng.integers(2, 8, 2)
                box = (x, y, x + 22, y + 22)
                if shape == "circle":
                    draw.ellipse(box, fill=rgb)
                elif shape == "square":
                    draw.rectangle(box, fill=rgb)
                elif shape == "triangle":
                    draw.polygon([(x, y + 22), (x + 11, y), (x + 22, y + 22)], fill=rgb)
                else:
                    draw.rectangle((x + 8, y, x + 14, y + 22), fill=rgb)
                    draw.rectangle((x, y + 8, x + 22, y + 14), fill=rgb)
                name = f"{colour}_{shape}_{copy}.png"
                image.save(root / name)
                rows.append({"path": name, "captions": [f"a {colour} {shape}", f"{colour} {shape}"],
                             "label": f"{colour} {shape}", "shape": shape})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "captions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**dict(
        data=(str(data),), out=str(out), vocab_size=40, context_length=8, image_size=32, patch_size=8,
        vision_width=32, vision_depth=2, vision_heads=2, vision_mlp=64, text_width=32, text_depth=1,
        text_heads=2, text_mlp=64, steps=6, batch_size=8, lr=3e-3, warmup_steps=2, save_every=3,
        workers=0, bf16=False, augment=True, seed=0,
    ), **overrides})


def test_schedule_and_batches():
    assert [round(lr_factor(s, 2, 10), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    batches = epoch_batches(10, 4, seed=0, epoch=0)
    assert len(batches) == 2 and len(set(sum(batches, []))) == 8  # full batches only, no repeats
    assert batches == epoch_batches(10, 4, seed=0, epoch=0) != epoch_batches(10, 4, seed=0, epoch=1)


def test_distinct_caption_batches_keep_a_caption_out_of_its_own_batch():
    """Nine styles of 100 emoji: a plain shuffle puts pairs of one caption in a batch; grouped batches never do."""
    groups = [f"emoji {k % 100}" for k in range(900)]

    def repeats(batches):
        return sum(len(b) - len({groups[i] for i in b}) for b in batches)

    for epoch in range(3):
        plain = epoch_batches(900, 64, seed=0, epoch=epoch)
        grouped = epoch_batches(900, 64, seed=0, epoch=epoch, groups=groups)
        assert repeats(plain) > 50 and repeats(grouped) == 0
        assert len(grouped) == 14 and all(len(b) == 64 for b in grouped)
        assert len(set(sum(grouped, []))) == 14 * 64  # no record twice
        assert grouped == epoch_batches(900, 64, seed=0, epoch=epoch, groups=groups)  # exact resume
    # A group larger than the number of batches can't be split up: its extra records top batches up.
    crowded = epoch_batches(20, 4, seed=0, epoch=0, groups=["same"] * 12 + list("abcdefgh"))
    assert len(crowded) == 5 and all(len(b) == 4 for b in crowded) and len(set(sum(crowded, []))) == 20


def test_cluster_batches_hold_whole_clusters_of_distinct_captions():
    """Three styles of 128 emoji in 8 clusters of 16: each pass of 128 records fills 4 batches of exactly 2 clusters."""
    groups = [f"emoji {k % 128}" for k in range(384)]
    clusters = [f"cluster {k % 128 // 16}" for k in range(384)]
    pairs = set()
    for epoch in range(3):
        batches = epoch_batches(384, 32, seed=0, epoch=epoch, groups=groups, clusters=clusters)
        assert len(batches) == 12 and len(set(sum(batches, []))) == 384  # every record once
        for batch in batches:
            assert len({groups[i] for i in batch}) == 32  # no caption twice
            held = sorted({clusters[i] for i in batch})
            assert len(held) == 2 and sorted(clusters[i] for i in batch) == sorted(held * 16)  # whole clusters
            pairs.add(tuple(held))
        assert batches == epoch_batches(384, 32, seed=0, epoch=epoch, groups=groups, clusters=clusters)  # resume
        plain = epoch_batches(384, 32, seed=0, epoch=epoch, groups=groups)
        assert min(len({clusters[i] for i in b}) for b in plain) >= 6  # without clusters: mixed
    assert len(pairs) > 12  # each pass draws its own order of clusters
    # Groups of uneven size: a caption on 20 images among 2,000 single ones is spread over 20 passes of about
    # 100 records, so its images don't pile up in the last batches (passes of k-th records would put 15 in one).
    uneven = [f"single {k}" for k in range(2000)] + ["twenty"] * 20
    batches = epoch_batches(2020, 32, seed=0, epoch=0, groups=uneven, clusters=[g[:8] for g in uneven])
    assert len(set(sum(batches, []))) == 63 * 32 and max(sum(uneven[i] == "twenty" for i in b) for b in batches) <= 2


@pytest.mark.parametrize("preload", [False, True], ids=["decoded", "preloaded"])
def test_a_few_steps_lower_the_loss(shapes_data, tmp_path, preload):
    result = train(tiny_config(shapes_data, tmp_path, steps=40, batch_size=16, warmup_steps=4, save_every=100,
                               augment=preload, preload=preload), progress=False)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def train_whole_and_resumed(train_fn, whole_cfg, split_cfg):
    """(an uninterrupted 6-step run, one stopped after step 3 and resumed), their losses checked equal (1e-6)."""
    whole = train_fn(whole_cfg, progress=False)
    first = train_fn(split_cfg, progress=False, stop_at=3)
    assert sorted(first.losses) == [1, 2, 3] and not first.model_dir.exists()
    second = train_fn(split_cfg, progress=False)  # a new call, as after a crash: resumes from checkpoints/last.pt
    assert sorted(second.losses) == list(range(1, 7))
    for step in range(1, 7):
        assert second.losses[step] == pytest.approx(whole.losses[step], abs=1e-6), step
    return whole, second


@pytest.mark.parametrize("data_path", [dict(), dict(preload=True, workers=1, style_augment=True)],
                         ids=["decoded", "preloaded-styled"])
def test_resume_continues_exactly(shapes_data, tmp_path, data_path):
    whole, second = train_whole_and_resumed(train, tiny_config(shapes_data, tmp_path / "whole", **data_path),
                                            tiny_config(shapes_data, tmp_path / "split", **data_path))
    for key, tensor in DualEncoder.from_pretrained(whole.model_dir).state_dict().items():
        torch.testing.assert_close(DualEncoder.from_pretrained(second.model_dir).state_dict()[key], tensor,
                                   atol=1e-6, rtol=0)


def test_output_loads_in_transformers_with_equal_logits(shapes_data, tmp_path):
    result = train(tiny_config(shapes_data, tmp_path, steps=2), progress=False)
    folder = result.model_dir
    assert {"config.json", "model.safetensors", "spiece.model", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()}
    ours = DualEncoder.from_pretrained(folder)
    hf = SiglipModel.from_pretrained(folder).eval()
    texts = ["a red circle", "blue square", "a green cross"]
    images = [shapes_data.parent / "red_circle_0.png", shapes_data.parent / "blue_cross_1.png"]
    ids = AutoTokenizer.from_pretrained(folder)(texts, padding="max_length", max_length=8, truncation=True,
                                               return_tensors="pt")
    pixels = SiglipImageProcessorPil.from_pretrained(folder)([Image.open(p) for p in images],
                                                            return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = hf(input_ids=ids.input_ids, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(ours.logits(images, texts), expected, atol=1e-4, rtol=0)


def test_softmax_loss_trains(shapes_data, tmp_path):
    result = train(tiny_config(shapes_data, tmp_path, loss="softmax", steps=3), progress=False)
    model = DualEncoder.from_pretrained(result.model_dir)
    assert model.logit_bias.item() == -10.0  # untouched: the softmax loss has no bias
    assert all(np.isfinite(list(result.losses.values())))


def test_attn_implementation_auto_is_eager_on_cpu_and_takes_the_sdpa_steps(shapes_data, tmp_path, monkeypatch):
    """"auto" trains with the eager attention path on CPU (faster there); it computes what SDPA computes."""
    picked, real = [], train_module.set_attn_implementation

    def spy(model, name, device):  # what train() set: the text tower's kernel, each vision block's eager flag
        real(model, name, device)
        picked.append((model.text.config._attn_implementation, [b.attn.eager for b in model.vision.blocks]))

    monkeypatch.setattr(train_module, "set_attn_implementation", spy)
    sdpa = train(tiny_config(shapes_data, tmp_path / "sdpa", steps=4, attn_implementation="sdpa", device="cpu"),
                 progress=False)
    auto = train(tiny_config(shapes_data, tmp_path / "auto", steps=4, device="cpu"), progress=False)
    assert picked == [("sdpa", [False, False]), ("eager", [True, True])]
    for step in range(1, 5):
        assert auto.losses[step] == pytest.approx(sdpa.losses[step], abs=1e-5), step
    with pytest.raises(ValueError, match="Unknown attn_implementation 'flash'"):
        tiny_config(shapes_data, tmp_path, attn_implementation="flash")


def test_resume_warns_of_a_changed_config_but_not_of_fields_added_since(shapes_data, tmp_path, caplog):
    train(tiny_config(shapes_data, tmp_path, steps=3), progress=False, stop_at=1)
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["cluster_field"]  # as written before the field existed
    torch.save(state, checkpoint)
    train(tiny_config(shapes_data, tmp_path, steps=3), progress=False, stop_at=2)
    assert "with a changed config" not in caplog.text
    train(tiny_config(shapes_data, tmp_path, steps=3, grad_clip=0.5), progress=False)
    assert "with a changed config" in caplog.text


def test_auto_precision_is_decided_once_and_saved_so_a_resume_elsewhere_is_told(shapes_data, tmp_path, caplog,
                                                                                monkeypatch):
    def cpu(bf16_units: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_units)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)

    cpu(False)  # an AVX2 CPU: auto trains in fp32
    train(tiny_config(shapes_data, tmp_path, steps=3, bf16=None), progress=False, stop_at=1)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["bf16"] is False
    train(tiny_config(shapes_data, tmp_path, steps=3, bf16=None), progress=False, stop_at=2)
    assert "with a changed config" not in caplog.text
    cpu(True)  # resumed on a CPU with bf16 units: auto would now pick bf16, and the user hears of it
    train(tiny_config(shapes_data, tmp_path, steps=3, bf16=None), progress=False)
    assert "with a changed config" in caplog.text


def test_resuming_with_more_steps_follows_the_new_schedule_from_the_first_step(shapes_data, tmp_path):
    """A finished run (learning rate 0 at its end) resumed with a longer --steps: step 4 already learns."""
    train(tiny_config(shapes_data, tmp_path, steps=3), progress=False)
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    finished = torch.load(checkpoint, weights_only=True)
    assert [group["lr"] for group in finished["optimizer"]["param_groups"]] == [0.0, 0.0]
    train(tiny_config(shapes_data, tmp_path, steps=6), progress=False, stop_at=4)
    resumed = torch.load(checkpoint, weights_only=True)
    assert resumed["step"] == 4
    assert any(not torch.equal(finished["model"][key], tensor) for key, tensor in resumed["model"].items())


def run_torchrun(module: str, config: Path, processes: int = 2, timeout: float = 120) -> None:
    """`torchrun -m module --config config` on CPU (gloo), failing the test with its stderr if it fails."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
               str(free_port()), "-m", module, "--config", str(config)]
    # A session of its own, so that a timeout kills torchrun's workers too, not only torchrun.
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode == 0, stderr[-3000:]


def test_torchrun_two_processes_match_one(shapes_data, tmp_path):
    """DDP + the ring-distributed loss over 2 gloo processes takes the same steps as one process."""
    single = train(tiny_config(shapes_data, tmp_path / "one", steps=4), progress=False)
    cfg = tiny_config(shapes_data, tmp_path / "two", steps=4)
    (tmp_path / "run.json").write_text(json.dumps(dataclasses.asdict(cfg) | {"data": list(cfg.data)}))
    run_torchrun("vlm_vision.training.train", tmp_path / "run.json")
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    for step in range(1, 5):
        assert state["losses"][step] == pytest.approx(single.losses[step], abs=1e-5), step


def test_help_shows_each_fields_comment_and_default(capsys):
    comments = cli_config.field_comments(train_module.TrainConfig)
    assert comments["lr"] == "peak learning rate, after linear warmup, then cosine decay to 0"
    assert set(comments) <= {f.name for f in dataclasses.fields(train_module.TrainConfig)} and "seed" not in comments
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--lr LR peak learning rate, after linear warmup, then cosine decay to 0 (default: 0.001)" in text
    assert ("--bf16, --no-bf16 bf16 autocast of the towers (losses stay fp32); unset: if the device has bf16 units"
            in text)
    assert "vlm-vision train --data" in text  # the module's examples


def test_a_device_this_machine_lacks_stops_the_run_at_once(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_module.init_distributed("cpu")[2] == torch.device("cpu")
    with pytest.raises(ValueError, match="Device 'cuda': CUDA is not available on this machine"):
        train_module.init_distributed("cuda")


def test_field_comments_are_end_of_line_comments_of_fields():
    @dataclasses.dataclass(frozen=True)
    class Example:
        """A docstring # that is not a comment."""

        # a comment above a field is not its own
        size: int | None = None
        names: tuple[str, ...] = (
            "a", "b")  # after a default that spans lines
        rate: float = 0.5  # #1 rate

        def method(self) -> None:
            x = 1  # not a field's
            del x

    assert cli_config.field_comments(Example) == {"names": "after a default that spans lines", "rate": "#1 rate"}


def test_config_file_and_flags(tmp_path, shapes_data):
    (tmp_path / "run.json").write_text(json.dumps({"data": [str(shapes_data)], "steps": 7, "loss": "softmax"}))
    cfg, stop_at = parse_args(["--config", str(tmp_path / "run.json"), "--steps", "9", "--no-bf16",
                               "--stop-at", "4"])
    assert (cfg.steps, cfg.loss, cfg.bf16, cfg.data, stop_at) == (9, "softmax", False, (str(shapes_data),), 4)
    (tmp_path / "bad.json").write_text(json.dumps({"data": ["x"], "stepz": 1}))
    with pytest.raises(SystemExit, match="unknown keys in --config: \\['stepz'\\]"):
        parse_args(["--config", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="No training data"):
        parse_args([])
    with pytest.raises(SystemExit, match="Unknown loss 'hinge'"):
        parse_args(["--data", "x", "--loss", "hinge"])
    with pytest.raises(SystemExit, match="steps and batch_size must be at least 1, got 0 and 256"):
        parse_args(["--data", "x", "--steps", "0"])
    with pytest.raises(SystemExit, match="vision_width 192 must be divisible by vision_heads 5"):
        parse_args(["--data", "x", "--vision-heads", "5"])
    assert parse_args(["--data", "x", "--distinct-captions"])[0].distinct_captions is True
    assert parse_args(["--data", "x", "--style-augment", "--style-p", "0.8"])[0].style_p == 0.8
    with pytest.raises(SystemExit, match=r"style_p is the share of images filtered, in \[0, 1\]; got 1.5"):
        parse_args(["--data", "x", "--style-p", "1.5"])
    with pytest.raises(SystemExit, match="style_p 0.8 sets how many images StyleAugment filters: add --style-augment"):
        parse_args(["--data", "x", "--style-p", "0.8"])


@pytest.mark.parametrize("text, message", [
    ('{"data": ["x"], "style_augment": true, "style_p": "0.8"}', "key 'style_p' must be a number, got \"0.8\""),
    ('{"data": ["x"], "steps": true}', "key 'steps' must be a whole number, got true"),
    ('{"data": ["x"], "steps": 7.5}', "key 'steps' must be a whole number, got 7.5"),
    ('{"data": ["x"], "bf16": "no"}', "key 'bf16' must be true, false or null, got \"no\""),
    ('{"data": ["x"], "augment": null}', "key 'augment' must be true or false, got null"),
    ('{"data": [1]}', "key 'data' must be a non-empty string or a list of them, got \\[1\\]"),
    ('{"data": ""}', "key 'data' must be a non-empty string or a list of them, got \"\""),
    ('{"data": ["x"], "lr": NaN}', "not valid JSON: NaN is not a number a config can use"),
    ('{"data": ["x"], "lr": 1' + "0" * 400 + '}', "key 'lr' is too large for a float"),
    ('["x"]', "must hold one JSON object of TrainConfig fields, not a list"),
    ('{"data": ["x"],}', "is not valid JSON"),
])
def test_config_file_errors_say_what_to_fix(tmp_path, text, message):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(SystemExit, match=message):
        parse_args(["--config", str(tmp_path / "run.json")])


def test_resuming_at_other_sizes_names_the_saved_ones(shapes_data, tmp_path):
    """Without --init, left-out sizes are the defaults; a run trained at others says which to resume with."""
    train(tiny_config(shapes_data, tmp_path, steps=2), progress=False, stop_at=1)
    resumed = tiny_config(shapes_data, tmp_path, steps=2, **dict.fromkeys(("vision_width", "text_mlp")))
    with pytest.raises(ValueError, match=r"last.pt was trained with --vision-width 32 \(this run: 192\), "
                                         r"--text-mlp 64 \(this run: 768\): resume with those size flags"):
        train(resumed, progress=False)


def test_size_defaults_are_the_embedded_models(tmp_path):
    """Without --init the sizes are the embedded model's; with it they stay unset until the checkpoint is read."""
    sized = {f.name for f in dataclasses.fields(TrainConfig) if f.type == "int | None"}
    assert set(train_module.DEFAULT_SIZES) == sized == set(train_module._VISION_FLAGS) | set(train_module._TEXT_FLAGS)
    defaults = TrainConfig(data=("x",))
    assert None not in [getattr(defaults, name) for name in sized]
    resolved, _ = train_module.load_init(TrainConfig(data=("x",), init=str(DEFAULT_MODEL)))
    assert {name: getattr(defaults, name) for name in train_module.DEFAULT_SIZES} == \
        {name: getattr(resolved, name) for name in train_module.DEFAULT_SIZES}
    assert parse_args(["--data", "x", "--init", "m"])[0].vision_width is None
    assert parse_args(["--data", "x", "--init", "m", "--vision-width", "64"])[0].vision_width == 64
    (tmp_path / "run.json").write_text('{"data": "x", "init": "m", "text_mlp": null, "text_depth": 2}')
    cfg, _ = parse_args(["--config", str(tmp_path / "run.json")])
    assert (cfg.text_mlp, cfg.text_depth) == (None, 2)
    (tmp_path / "run.json").write_text('{"data": "x", "text_depth": 2.5}')
    with pytest.raises(SystemExit, match="key 'text_depth' must be a whole number or null, got 2.5"):
        parse_args(["--config", str(tmp_path / "run.json")])


def test_config_file_types(tmp_path):
    (tmp_path / "run.json").write_text('{"data": "photos", "lr": 1, "style_augment": true, "style_p": 1}')
    cfg, _ = parse_args(["--config", str(tmp_path / "run.json")])
    assert (cfg.data, cfg.lr, cfg.style_p) == (("photos",), 1.0, 1.0) and isinstance(cfg.lr, float)  # one folder
    for config_class in (TrainConfig, ProjectorTrainConfig):  # every field type has a JSON check
        assert {f.type for f in dataclasses.fields(config_class)} <= set(cli_config._JSON_TYPES)
    with pytest.raises(SystemExit, match="can't read --config .*missing.json: No such file or directory"):
        parse_args(["--config", str(tmp_path / "missing.json")])


def test_style_p_is_the_share_the_filters_get(shapes_data, tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(train_module, "StyleAugment", lambda **kw: made.append(kw) or StyleAugment(**kw))
    train(tiny_config(shapes_data, tmp_path, steps=1, style_augment=True, style_p=0.8), progress=False)
    assert made == [{"p": 0.8}]


def test_cluster_field_batches_the_records_by_its_clusters(shapes_data, tmp_path, monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args)
        return epoch_batches(*args)

    monkeypatch.setattr(train_module, "epoch_batches", spy)
    train(tiny_config(shapes_data, tmp_path, steps=2, cluster_field="shape"), progress=False)  # groups by caption too
    *_, groups, clusters = calls[0]
    rows = [json.loads(line) for line in shapes_data.read_text().splitlines()]
    assert clusters == [row["shape"] for row in rows] and groups == [row["captions"][0] for row in rows]
    batch = spy(*calls[0])[0]  # 8 records of 32: two whole shapes, one record of each colour
    assert sorted(clusters[i] for i in batch) in ([a] * 4 + [b] * 4 for a in SHAPES for b in SHAPES)


def test_tokenizer_training_counts_each_caption_once(tmp_path):
    """Captions repeated per style give the tokenizer the captions once (SentencePiece 0.2.2 hangs on repeats)."""
    captions = [f"{colour} {thing}" for colour in ("red", "blue", "green") for thing in ("heart", "circle", "car")]
    once = train_tokenizer(captions, tmp_path / "once", vocab_size=40)
    repeated = train_tokenizer(captions * 12, tmp_path / "repeated", vocab_size=40)
    assert (tmp_path / "once" / "spiece.model").read_bytes() == (tmp_path / "repeated" / "spiece.model").read_bytes()
    assert once.tokenize("blue heart") == repeated.tokenize("blue heart")


def test_too_little_data_for_a_batch(shapes_data, tmp_path):
    with pytest.raises(ValueError, match="32 training pairs can't fill one batch of 64"):
        train(tiny_config(shapes_data, tmp_path, batch_size=64), progress=False)


def test_init_fine_tunes_a_checkpoint_with_its_tokenizer_and_preprocessing(shapes_data, tmp_path):
    """--init starts from a checkpoint's weights, t', b, tokenizer and preprocessing: at learning rate 0 the output
    equals it."""
    source = train(tiny_config(shapes_data, tmp_path / "source", steps=3), progress=False).model_dir
    settings = json.loads((source / "preprocessor_config.json").read_text())
    settings["image_mean"] = [0.25, 0.5, 0.75]  # not the default, so it must have come from the source
    (source / "preprocessor_config.json").write_text(json.dumps(settings))
    tuned = train(tiny_config(shapes_data, tmp_path / "tuned", steps=2, lr=0.0, init=str(source)),
                  progress=False).model_dir
    fresh = train(tiny_config(shapes_data, tmp_path / "fresh", steps=2, lr=0.0), progress=False).model_dir
    expected = DualEncoder.from_pretrained(source).state_dict()
    tuned_state, fresh_state = (DualEncoder.from_pretrained(f).state_dict() for f in (tuned, fresh))
    assert tuned_state.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(tuned_state[key], tensor, atol=0, rtol=0)
    assert any(not torch.equal(fresh_state[key], tensor) for key, tensor in expected.items())
    assert (tuned / "spiece.model").read_bytes() == (source / "spiece.model").read_bytes()
    assert not (tmp_path / "tuned" / "tokenizer").exists()  # no new tokenizer was trained
    assert json.loads((tuned / "preprocessor_config.json").read_text())["image_mean"] == [0.25, 0.5, 0.75]
    # A run stopped and resumed with --init continues from its checkpoint exactly.
    train_whole_and_resumed(train, tiny_config(shapes_data, tmp_path / "whole", init=str(source)),
                            tiny_config(shapes_data, tmp_path / "split", init=str(source)))
    # Resuming it without --init (or with another) would pair its weights with another vocabulary: refused.
    with pytest.raises(ValueError, match="was trained with --init .*resume with the same --init, or pass a new --out"):
        train(tiny_config(shapes_data, tmp_path / "split", steps=8), progress=False)


def test_init_takes_the_checkpoints_sizes_and_refuses_other_ones(shapes_data, tmp_path, caplog):
    source = train(tiny_config(shapes_data, tmp_path / "source", steps=1), progress=False).model_dir
    # Size flags left out: the checkpoint's (not the defaults, which are another model's).
    init = shutil.copytree(source, tmp_path / "init")  # replaced below
    unsized = tiny_config(shapes_data, tmp_path / "unsized", steps=2, init=str(init),
                          **dict.fromkeys(train_module.DEFAULT_SIZES))
    assert unsized.vision_width is None
    train(unsized, progress=False, stop_at=1)
    state = torch.load(tmp_path / "unsized" / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["vision_width"] == 32 and state["config"]["context_length"] == 8  # saved resolved
    tuned = train(unsized, progress=False).model_dir  # resumed the same way: the same sizes, the same config
    assert "with a changed config" not in caplog.text
    assert json.loads((tuned / "config.json").read_text()) == json.loads((source / "config.json").read_text())
    # The --init folder replaced by a model of other sizes: its run can't resume on it.
    other = train(tiny_config(shapes_data, tmp_path / "other_source", steps=1, text_mlp=48), progress=False)
    shutil.copytree(other.model_dir, init, dirs_exist_ok=True)
    with pytest.raises(ValueError, match=r"trained with --text-mlp 64 \(this run: 48\): --init's sizes have changed"):
        train(dataclasses.replace(unsized, steps=3), progress=False)
    # A size flag that is not the checkpoint's is refused, naming each.
    with pytest.raises(CheckpointError, match=r"leave the size flags \(and --config keys\) out to take the "
                                              r"checkpoint's .*--vision-heads 4 \(checkpoint: 2\), "
                                              r"--text-mlp 48 \(checkpoint: 64\)$"):  # heads change no shape
        train(tiny_config(shapes_data, tmp_path / "other", vision_heads=4, text_mlp=48, init=str(source)),
              progress=False)
    DualEncoder.from_pretrained(source).vision.save_pretrained(tmp_path / "tower")
    with pytest.raises(CheckpointError, match="not a full SigLIP image-text checkpoint"):
        train(tiny_config(shapes_data, tmp_path / "tower_run", init=str(tmp_path / "tower")), progress=False)


def test_init_refuses_a_tokenizer_that_is_not_the_checkpoints(shapes_data, tmp_path):
    """The checkpoint's token embeddings are indexed by its vocabulary: --tokenizer must be that one, piece for
    piece. Two SentencePiece runs capped at one --vocab-size often come out the same size, so size can't tell."""
    source = train(tiny_config(shapes_data, tmp_path / "source", steps=1), progress=False).model_dir
    captions = [c for line in shapes_data.read_text().splitlines() for c in json.loads(line)["captions"]]
    reversed_captions = [c[::-1] for c in captions]  # "elcric der a": other pieces from the same letters
    train_tokenizer(reversed_captions, tmp_path / "same_size", vocab_size=24)  # the checkpoint's 24 tokens
    train_tokenizer(reversed_captions, tmp_path / "other_size", vocab_size=40)
    for name, sizes in (("same_size", "24 tokens vs 24, 19 of"), ("other_size", "27 tokens vs 24")):
        with pytest.raises(CheckpointError, match=rf"--tokenizer .*{name} is not the vocabulary of --init .*"
                                                  rf"\({sizes}.*drop --tokenizer to use the checkpoint's$"):
            train(tiny_config(shapes_data, tmp_path / f"{name}_run", tokenizer=str(tmp_path / name), init=str(source)),
                  progress=False)
    # The checkpoint's own tokenizer, named explicitly, is its vocabulary.
    train(tiny_config(shapes_data, tmp_path / "own_run", steps=1, tokenizer=str(source), init=str(source)),
          progress=False)
