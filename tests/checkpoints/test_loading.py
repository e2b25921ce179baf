"""Loading from folders, single files and the HF Hub cache, and every way it can fail."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlm_vision import CheckpointError, VisionConfig, VisionTransformer
from vlm_vision.model.config import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def same_weights(a: VisionTransformer, b: VisionTransformer) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loads_from_a_full_siglip_checkpoint(tiny_siglip):
    folder, hf = tiny_siglip
    ours = VisionTransformer.from_pretrained(folder)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).pooler_output, hf.vision_model(pixels).pooler_output,
                                   atol=1e-5, rtol=0)


def test_single_safetensors_file_uses_config_beside_it_or_given(tiny_vision, tmp_path):
    folder, _ = tiny_vision
    reference = VisionTransformer.from_pretrained(folder)
    assert same_weights(VisionTransformer.from_pretrained(folder / "model.safetensors"), reference)
    lone = tmp_path / "weights.safetensors"
    shutil.copy(folder / "model.safetensors", lone)
    with pytest.raises(CheckpointError, match=r"No config.json in .*pass config=VisionConfig\(...\)"):
        VisionTransformer.from_pretrained(lone)
    config = VisionConfig.from_hf_dict(json.loads((folder / "config.json").read_text()))
    assert same_weights(VisionTransformer.from_pretrained(lone, config=config), reference)


def test_sharded_checkpoint(tiny_vision, tmp_path):
    from safetensors.torch import save_file

    folder, _ = tiny_vision
    state = load_file(folder / "model.safetensors")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, tmp_path / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(folder / "config.json", tmp_path)
    assert same_weights(VisionTransformer.from_pretrained(tmp_path), VisionTransformer.from_pretrained(folder))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing: \\['model-00002-of-00002.safetensors'\\]"):
        VisionTransformer.from_pretrained(tmp_path)


@pytest.fixture
def pickle_checkpoint(tiny_vision, tmp_path):
    folder, _ = tiny_vision
    torch.save(load_file(folder / "model.safetensors"), tmp_path / "pytorch_model.bin")
    shutil.copy(folder / "config.json", tmp_path)
    return tmp_path


def test_pickle_is_refused_unless_allowed(pickle_checkpoint, tiny_vision):
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\).*allow_pickle=True"):
        VisionTransformer.from_pretrained(pickle_checkpoint)
    with pytest.raises(CheckpointError, match=r"Refusing to unpickle .*allow_pickle=True"):
        VisionTransformer.from_pretrained(pickle_checkpoint / "pytorch_model.bin")
    model = VisionTransformer.from_pretrained(pickle_checkpoint, allow_pickle=True)
    assert same_weights(model, VisionTransformer.from_pretrained(tiny_vision[0]))


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_allowed_pickle_still_refuses_code(tmp_path, tiny_vision):
    # Protocol 2, as torch.save writes (another protocol only adds a warning from the unpickler).
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Payload()}, protocol=2))
    shutil.copy(tiny_vision[0] / "config.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"weights_only=True refused"):
        VisionTransformer.from_pretrained(tmp_path, allow_pickle=True)


@pytest.mark.parametrize("model_type, message", [
    ("clip_vision_model", "model_type 'clip_vision_model'; vlm_vision loads SigLIP and SigLIP 2 vision towers only"),
    ("siglip_text_model", "it is a SigLIP \\*text\\* tower only"),
    ("siglip2_text_model", "it is a SigLIP 2 \\*text\\* tower only"),
])
def test_other_architectures_are_refused(tiny_vision, tmp_path, model_type, message):
    shutil.copy(tiny_vision[0] / "model.safetensors", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 64}))
    with pytest.raises(CheckpointError, match=f"Not a SigLIP vision checkpoint: .*{message}"):
        VisionTransformer.from_pretrained(tmp_path)


def test_config_from_dict_and_back():
    for name, preset in PRESETS.items():
        assert VisionConfig.from_hf_dict(preset.to_hf_dict()) == preset, name
    nested = {"model_type": "siglip", "vision_config": {"hidden_size": 1152, "num_attention_heads": 16,
                                                        "image_size": [384, 384], "patch_size": 14}}
    config = VisionConfig.from_hf_dict(nested)
    assert (config.hidden_size, config.image_size, config.grid_size) == (1152, 384, 27)
    with pytest.raises(CheckpointError, match=r"Non-square image_size \[384, 256\]"):
        VisionConfig.from_hf_dict({"model_type": "siglip_vision_model", "image_size": [384, 256]})
    with pytest.raises(CheckpointError, match="hidden_size \\(100\\) must be divisible by num_attention_heads"):
        VisionConfig.from_hf_dict({"model_type": "siglip_vision_model", "hidden_size": 100})
    with pytest.raises(ValueError, match="Unknown hidden_act 'relu'"):
        VisionConfig(hidden_act="relu")


def test_transformers_reads_our_config():
    from transformers import SiglipVisionConfig

    preset = PRESETS["siglip-so400m-patch14-384"]
    theirs = SiglipVisionConfig.from_dict(preset.to_hf_dict())
    assert (theirs.hidden_size, theirs.intermediate_size, theirs.patch_size) == (1152, 4304, 14)


def test_missing_local_path_and_no_weights(tmp_path):
    with pytest.raises(CheckpointError, match="No such checkpoint file or folder: './nowhere/model.safetensors'"):
        VisionTransformer.from_pretrained("./nowhere/model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"No weights found in .*expected model.safetensors.*config.json"):
        VisionTransformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        VisionTransformer.from_pretrained(tmp_path)


def test_revision_with_a_local_path_is_an_error(tiny_vision):
    with pytest.raises(ValueError, match="revision='v1' only applies to Hub ids"):
        VisionTransformer.from_pretrained(tiny_vision[0], revision="v1")


def lay_out_hf_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str, ref: str = "main") -> None:
    """Place files the way huggingface_hub's cache stores a downloaded snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        blob = repo / "blobs" / f"{commit[:8]}-{name}"
        blob.parent.mkdir(exist_ok=True)
        shutil.copy(source, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


HUB_SCRIPT = """
import sys, torch
from vlm_vision import VisionTransformer, CheckpointError
repo, revision, expect = sys.argv[1], sys.argv[2] or None, sys.argv[3]
try:
    model = VisionTransformer.from_pretrained(repo, revision=revision)
except CheckpointError as e:
    print("ERROR", e)
else:
    print("LOADED", round(model.pos_embed.sum().item(), 4))
"""


def run_offline(cache: Path, repo: str, revision: str = "") -> str:
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT, repo, revision, ""], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hub_id_resolves_from_offline_cache(tiny_vision, tmp_path):
    folder, _ = tiny_vision
    files = {name: folder / name for name in ("config.json", "model.safetensors")}
    lay_out_hf_cache(tmp_path, "acme/tiny-siglip", files, commit="a" * 40)
    other = VisionTransformer.from_pretrained(folder)
    with torch.no_grad():
        other.pos_embed.mul_(2)
    other.save_pretrained(tmp_path / "v2")
    lay_out_hf_cache(tmp_path, "acme/tiny-siglip", {n: tmp_path / "v2" / n for n in files}, commit="b" * 40, ref="v2")
    expected = round(VisionTransformer.from_pretrained(folder).pos_embed.sum().item(), 4)
    assert run_offline(tmp_path, "acme/tiny-siglip") == f"LOADED {expected}"
    assert run_offline(tmp_path, "acme/tiny-siglip", "v2") == f"LOADED {round(2 * expected, 4)}"
    assert run_offline(tmp_path, "acme/tiny-siglip", "b" * 40) == f"LOADED {round(2 * expected, 4)}"
    assert "not in the local Hugging Face cache" in run_offline(tmp_path, "acme/not-downloaded")
    assert "not in the local Hugging Face cache" in run_offline(tmp_path, "acme/tiny-siglip", "v3")


# --- writing: hub.write_safetensors streams the file tensor by tensor -------------------------------------------


def test_write_safetensors_writes_what_safetensors_save_does(tiny_siglip, tmp_path):
    from safetensors.torch import save

    from vlm_vision.checkpoints import write_safetensors

    state = tiny_siglip[1].state_dict()
    write_safetensors(tmp_path / "model.safetensors", state)
    assert (tmp_path / "model.safetensors").read_bytes() == save(state, metadata={"format": "pt"})


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes, to compare dtypes that torch.equal doesn't (float8) and NaNs exactly."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def test_write_safetensors_round_trips_every_dtype_and_layout_as_safetensors_save_does(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save

    from vlm_vision.checkpoints import write_safetensors

    f8 = torch.randn(4) * 4
    state = {  # by name alone bool, f64 and i32 would go before u8, i64 and f32: safetensors orders by dtype first
        "f32": torch.randn(3, 5), "bf16": torch.randn(7, dtype=torch.bfloat16), "f16": torch.randn(2).half(),
        "f64": torch.randn(1, dtype=torch.float64), "i64": torch.arange(5), "i32": torch.arange(3, dtype=torch.int32),
        "i16": torch.tensor([-7], dtype=torch.int16), "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u64": torch.tensor([0, 2**63 + 5], dtype=torch.uint64), "u32": torch.tensor([2**32 - 1], dtype=torch.uint32),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16), "u8": torch.tensor([255], dtype=torch.uint8),
        "f8_e4m3": f8.to(torch.float8_e4m3fn), "f8_e5m2": f8.to(torch.float8_e5m2),
        "f8_e4m3fnuz": f8.to(torch.float8_e4m3fnuz), "f8_e5m2fnuz": f8.to(torch.float8_e5m2fnuz),
        "c64": torch.randn(2, dtype=torch.complex64), "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4), "ünïcode": torch.ones(2),
        "transposed": torch.randn(4, 6).T, "strided": torch.randn(10)[::3],  # made contiguous on the way out
    }
    path = tmp_path / "mixed.safetensors"
    write_safetensors(path, state)
    contiguous = {name: tensor.contiguous() for name, tensor in state.items()}  # save() refuses the others
    assert path.read_bytes() == save(contiguous, metadata={"format": "pt"})
    back = load_file(path)  # safetensors checks the header's byte ranges cover the data exactly
    assert back.keys() == state.keys()
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(bits(back[name]), bits(tensor)), name
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers checks before loading
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert (8 + header_len) % 8 == 0  # tensors start aligned, wider dtypes first
    offsets = json.loads(path.read_bytes()[8:8 + header_len])
    starts = {name: offsets[name]["data_offsets"][0] for name in state}
    assert all(starts[name] % state[name].element_size() == 0 for name in state)


def test_write_safetensors_stores_little_endian_on_a_big_endian_machine(tmp_path, monkeypatch):
    from vlm_vision.checkpoints import hub

    state = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([1, 2], dtype=torch.uint8),
             "c": torch.tensor([1 - 2j, 3 + 4j], dtype=torch.complex64)}
    monkeypatch.setattr(hub.sys, "byteorder", "big")  # this host is little-endian: the swap shows as swapped bytes
    hub.write_safetensors(tmp_path / "be.safetensors", state)
    monkeypatch.undo()
    data = (tmp_path / "be.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8:8 + header_len]), data[8 + header_len:]

    def stored(name: str) -> bytes:
        start, end = header[name]["data_offsets"]
        return body[start:end]

    assert stored("w") == state["w"].numpy().byteswap().tobytes()
    assert stored("c") == state["c"].numpy().byteswap().tobytes()  # each half of a complex on its own
    assert stored("b") == state["b"].numpy().tobytes()  # single bytes have no order


def test_write_safetensors_refuses_overlapping_tensors_and_unknown_dtypes_and_writes_nothing(tmp_path):
    from safetensors.torch import save

    from vlm_vision.checkpoints import write_safetensors

    weight = torch.randn(4, 4)
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    for pair in ({"embed.weight": weight, "head.weight": weight},  # tied weights
                 {"embed.weight": weight, "head.weight": weight[:2]},
                 {"embed.weight": weight[2:], "head.weight": weight[1:3]}):
        with pytest.raises(RuntimeError, match="share memory"):
            save(pair)  # safetensors refuses these too
        with pytest.raises(ValueError, match=r"embed\.weight and head\.weight share memory.*\.clone\(\)"):
            write_safetensors(path, pair)
    with pytest.raises(ValueError, match=r"z is torch\.complex128.*convert it"):
        write_safetensors(path, {"z": torch.zeros(2, dtype=torch.complex128)})
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_write_safetensors_writes_disjoint_views_of_one_buffer_as_safetensors_save_does(tmp_path):
    from safetensors.torch import save

    from vlm_vision.checkpoints import write_safetensors

    qkv = torch.randn(6, 4)
    state = dict(zip(["q", "k", "v"], qkv.split(2)))  # views of qkv's memory, side by side
    state["empty"] = qkv[3:3]  # inside k's bytes, but with no bytes of its own
    write_safetensors(tmp_path / "split.safetensors", state)
    assert (tmp_path / "split.safetensors").read_bytes() == save(state, metadata={"format": "pt"})
    back = load_file(tmp_path / "split.safetensors")
    assert all(torch.equal(back[name], tensor) for name, tensor in state.items())


def test_default_names_the_embedded_model_and_a_folder_of_that_name_is_dot_slash_default(tmp_path, monkeypatch):
    from vlm_vision.checkpoints import DEFAULT_MODEL, resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    assert resolve_checkpoint("default") == DEFAULT_MODEL  # as an index records it ("Use --model 'default'")
    assert resolve_checkpoint("./default") == Path("default")


def test_a_device_this_machine_lacks_is_refused_before_loading(tiny_vision, tiny_siglip, monkeypatch):
    from vlm_vision import DualEncoder
    from vlm_vision.model.device import as_device

    assert as_device(None) is None and as_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device 'gpu0'; use e.g. 'cpu', 'cuda'"):
        as_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for load, folder in ((VisionTransformer.from_pretrained, tiny_vision[0]), (DualEncoder.from_pretrained,
                                                                             tiny_siglip[0])):
        with pytest.raises(ValueError, match="Device 'cuda': CUDA is not available on this machine .*use 'cpu'"):
            load(folder, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert as_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="has 2 CUDA device\\(s\\), cuda:0 to cuda:1"):
        as_device("cuda:2")
