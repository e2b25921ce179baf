"""Inference modes of the vision tower (exact, compiled, int8, ONNX Runtime), chosen in one place: `optimize`."""

from .int8 import FLOAT_LAYERS, int8_available, quantize_int8
from .modes import (
    AUTO,
    INT8_PAYS_FROM,
    MODE_CHOICES,
    MODE_HELP,
    MODES,
    choose_mode,
    compile_tower,
    describe,
    int8_pays_from,
    mode_of,
    optimize,
)
from .onnx_runtime import OnnxVisionTower

__all__ = ["AUTO", "FLOAT_LAYERS", "INT8_PAYS_FROM", "MODES", "MODE_CHOICES", "MODE_HELP", "OnnxVisionTower",
           "choose_mode", "compile_tower", "describe", "int8_available", "int8_pays_from", "mode_of", "optimize",
           "quantize_int8"]
