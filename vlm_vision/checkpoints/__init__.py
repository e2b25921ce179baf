"""Checkpoints: names resolved to local files (folders, single files, the HF Hub and its cache), transformers'
state dicts converted to ours and back with strict key checks, safetensors and JSON written atomically, and the
embedded default models. Nothing here builds a model: the model's `from_pretrained` calls into this layer."""

from .atomic import replace_atomically, write_text
from .convert import VISION_TOWER, check_keys, hf_to_ours, key_groups, mismatch_message, ours_to_hf, vision_keys_only
from .embedded import DATA_DIR, DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_MODEL_NAME, SAMPLES, default_model
from .hub import load_weights, read_json, resolve_checkpoint, weight_files, write_json, write_safetensors

__all__ = [
    "DATA_DIR",
    "DEFAULT_CAPTIONER",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_NAME",
    "SAMPLES",
    "VISION_TOWER",
    "check_keys",
    "default_model",
    "hf_to_ours",
    "key_groups",
    "load_weights",
    "mismatch_message",
    "ours_to_hf",
    "read_json",
    "replace_atomically",
    "resolve_checkpoint",
    "vision_keys_only",
    "weight_files",
    "write_json",
    "write_safetensors",
    "write_text",
]
