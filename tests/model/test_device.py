"""Precision chosen by the hardware: "auto" is bf16 exactly where the device computes it natively, on CPUs with and
without bf16 units (their flags mocked both ways), on CUDA, in the loaders, the command lines and training."""

from __future__ import annotations

import logging

import pytest
import torch

from vlm_vision import VisionTransformer
from vlm_vision.model import device as device_module
from vlm_vision.model.device import (
    as_dtype,
    auto_dtype,
    compute_dtype,
    native_bf16,
    use_bf16_autocast,
)

WARNED = "no native bf16"


@pytest.fixture(params=["avx2", "avx512_bf16", "amx"])
def cpu(request, monkeypatch):
    """A CPU of each kind: AVX2 only (bf16 emulated), AVX-512 BF16, AMX (Sapphire Rapids and later)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: request.param == "avx512_bf16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: request.param == "amx")
    return request.param


def test_auto_is_bf16_exactly_on_cpus_with_bf16_units(cpu):
    native = cpu != "avx2"
    assert native_bf16() is native_bf16("cpu") is native
    assert auto_dtype("cpu") == as_dtype("auto") == as_dtype("auto", "cpu") == (torch.bfloat16 if native
                                                                                  else torch.float32)


def test_cuda_is_asked_for_its_own_bf16_units(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for hardware in (True, False):  # e.g. an H100, and a T4 (bf16 only emulated)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
                            or hardware)  # torch's default counts emulation: native_bf16 must not
        assert auto_dtype("cuda") == (torch.bfloat16 if hardware else torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not native_bf16("cuda")
    assert auto_dtype("mps") == torch.float32  # every other device: the precision all of them compute


def test_names_none_and_mistakes():
    assert as_dtype(None) is None and compute_dtype(None) == torch.float32  # the exact path stays the default
    assert as_dtype("bfloat16") == as_dtype("torch.bfloat16") == as_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'; use 'auto', 'float32', 'bfloat16' or 'float16'"):
        as_dtype("fp8")


def test_forcing_bf16_where_it_is_emulated_warns_with_the_cost(cpu, caplog):
    with caplog.at_level(logging.WARNING, logger=device_module.__name__):
        assert compute_dtype("bfloat16", "cpu") == torch.bfloat16  # still done: the user asked
        assert compute_dtype("auto", "cpu") == (torch.float32 if cpu == "avx2" else torch.bfloat16)
        assert compute_dtype("float32", "cpu") == torch.float32
    warnings = [r.getMessage() for r in caplog.records]
    if cpu == "avx2":
        assert len(warnings) == 1 and WARNED in warnings[0] and "7x" in warnings[0] and "'auto' or float32" in (
            warnings[0])
    else:
        assert warnings == []


def test_training_autocast_follows_the_hardware_unless_told(cpu, caplog):
    native = cpu != "avx2"
    with caplog.at_level(logging.WARNING, logger=device_module.__name__):
        assert use_bf16_autocast(None, "cpu") is native
        assert use_bf16_autocast(False, "cpu") is False
        assert use_bf16_autocast(True, "cpu") is True
    assert [WARNED in r.getMessage() and "20x" in r.getMessage() for r in caplog.records] == ([] if native else [True])


def test_loaders_take_auto(cpu, tiny_vision):
    folder, _ = tiny_vision
    expected = torch.float32 if cpu == "avx2" else torch.bfloat16
    assert VisionTransformer.from_pretrained(folder, dtype="auto").dtype == expected
    assert VisionTransformer.from_pretrained(folder).dtype == torch.float32  # no dtype: exact, as transformers


def test_command_lines_default_to_auto():
    from vlm_vision.__main__ import build_parser as vlm_vision_parser
    from vlm_vision.app.__main__ import build_parser as app_parser
    from vlm_vision.index.__main__ import build_parser as index_parser
    from vlm_vision.training.train import TrainConfig
    from vlm_vision.vlm.train import ProjectorTrainConfig

    assert vlm_vision_parser().parse_args(["classify", "x.png", "--labels", "a"]).dtype == "auto"
    assert index_parser().parse_args(["build", "photos"]).dtype == "auto"
    assert app_parser().parse_args([]).dtype == "auto"
    assert TrainConfig(data=("x",)).bf16 is None and ProjectorTrainConfig(data=("x",), lm="lm").bf16 is None
