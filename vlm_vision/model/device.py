"""Where a model runs and in what precision: devices checked up front, dtypes by name, and "auto", the precision
the device computes natively.

bf16 is fast only where the hardware computes it: CUDA GPUs with bf16 units, and CPUs with AVX-512 BF16 or AMX.
Elsewhere torch emulates it. On a 2-core AMD EPYC with AVX2 only (2026-12-07), a bf16 matmul ran at about
1 GFLOP/s against 121 in fp32: a B/16 forward pass was 7 times slower in bf16 and bf16-autocast training 20 times.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"  # the dtype (or autocast) the device computes natively: bf16 where it has bf16 units, else fp32
DTYPE_CHOICES = (AUTO, "float32", "bfloat16")  # what the command lines offer for --dtype
DTYPE_HELP = ("'auto' (the default): bfloat16 where the device computes it natively (CUDA; CPUs with AVX-512 BF16 or "
              "AMX), float32 elsewhere")
EMULATED_BF16 = ("this CPU has no native bf16 (no AVX-512 BF16 or AMX), so torch emulates it: measured on an "
                 "AVX2-only CPU, a forward pass ran 7x and training 20x slower than in float32. Use 'auto' or float32")


def as_device(device: torch.device | str | None) -> torch.device | None:
    """`device` as a torch.device (None stays None), refused up front with what to use where this machine has none
    such: otherwise a missing GPU surfaces deep inside `.to()` as "Torch not compiled with CUDA enabled"."""
    if device is None or isinstance(device, torch.device) and device.type == "cpu":
        return device
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"Unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'") from e
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"Device {str(device)!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use 'cpu'")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"Device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {str(device)!r}: MPS is not available on this machine; use 'cpu'")
    return resolved


def native_bf16(device: torch.device | str | None = None) -> bool:
    """Whether `device` (default: the CPU) computes bfloat16 in hardware."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False  # MPS and others: float32, the precision every device computes


def auto_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bfloat16 where `device` (default: the CPU) computes it natively, float32 elsewhere."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def as_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None = None) -> torch.dtype | None:
    """Accept torch dtypes, their names ("bfloat16", "float16", "float32") and "auto" (for `device`, default CPU)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) == AUTO:
        return auto_dtype(device)
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return resolved


def compute_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype a loader gives the weights: `dtype` resolved for `device`, float32 (the exact path) when None.

    Asking for bfloat16 on a CPU that emulates it still works, with a warning that says what it costs."""
    resolved = as_dtype(dtype, device) or torch.float32
    if resolved == torch.bfloat16 and _emulates_bf16(device):
        logger.warning("bfloat16 on %s", EMULATED_BF16)
    return resolved


def use_bf16_autocast(bf16: bool | None, device: torch.device | str | None = None) -> bool:
    """Whether training autocasts to bfloat16: as asked, or (None) where `device` computes it natively."""
    if bf16 is None:
        return native_bf16(device)
    if bf16 and _emulates_bf16(device):
        logger.warning("bf16 autocast on %s (--no-bf16)", EMULATED_BF16)
    return bf16


def _emulates_bf16(device: torch.device | str | None) -> bool:
    return torch.device(device or "cpu").type == "cpu" and not native_bf16("cpu")
