"""Training configs from the command line: a JSON --config file, overridden by flags named after the fields.

`parse_config` serves both training entry points (`vlm_vision.training.train`, `vlm_vision.vlm.train`): every
field of their config dataclass is a flag and a key of the file, and a value of the wrong type is an error that
names the key, before any training starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any


def field_comments(config_class: type[Any]) -> dict[str, str]:
    """Each field's comment at the end of its line in the class's source (`lr: float = 1e-3  # peak learning
    rate`): the configs document their fields in place, and --help shows the same words. Empty without source."""
    try:
        source = textwrap.dedent(inspect.getsource(config_class))
    except (OSError, TypeError):  # installed without .py files
        return {}
    comments, name = {}, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.start[1] == 4 and name is None:  # a name at the class body's indent
            name = token.string
        elif token.type == tokenize.COMMENT and name is not None:
            comments[name] = token.string.removeprefix("#").strip()
        if token.type == tokenize.NEWLINE:  # a statement's end, after a default that spans lines
            name = None
    fields = {f.name for f in dataclasses.fields(config_class)}
    return {key: text for key, text in comments.items() if key in fields}


def parse_config(config_class: type[Any], argv: list[str] | None, prog: str,
                 description: str | None) -> tuple[Any, int | None]:
    """(a config dataclass from an optional JSON --config file overridden by flags named after its fields, --stop-at).

    Fields typed `bool` (or `bool | None`, None when left out) become --x/--no-x, `int` (or `int | None`) and
    `float` are parsed as such, a field named `data` takes one or more values; every other field is a string.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help=f"JSON file with {config_class.__name__} fields")
    parser.add_argument("--stop-at", type=int, help="end this run after this step (resume later)")
    comments = field_comments(config_class)
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", "bool | None"):
            default = {True: " (default: on)", False: " (default: off)", None: ""}[f.default]
        else:
            default = "" if f.default in ((), "", None) else f" (default: {f.default})"
        help_text = (comments.get(f.name, "") + default).strip().replace("%", "%%") or None
        if f.name == "data":
            parser.add_argument(flag, nargs="+", default=None, help=help_text)
        elif f.type in ("bool", "bool | None"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type={"int": int, "int | None": int, "float": float}.get(f.type, str),
                                default=None, help=help_text)
    args = vars(parser.parse_args(argv))
    stop_at = args.pop("stop_at")
    config_file = args.pop("config")
    values = read_config_file(config_class, config_file) if config_file else {}
    values |= {k: v for k, v in args.items() if v is not None}
    values["data"] = tuple(values.get("data", ()))
    try:
        return config_class(**values), stop_at
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e


# What a JSON value must be for each declared field type, and how to say it.
_JSON_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "bool | None": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "int | None": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool), "a whole number or null"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[str, ...]": (lambda v: isinstance(v, str) and v != "" or isinstance(v, list) and all(
        isinstance(x, str) and x != "" for x in v), "a non-empty string or a list of them"),
}


def read_config_file(config_class: type[Any], file: Path) -> dict[str, Any]:
    """The fields of a JSON --config file, each checked against its field's type; SystemExit says what to fix."""
    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number a config can use")

    try:
        values = json.loads(file.read_text(encoding="utf-8"), parse_constant=no_constant)  # NaN, Infinity
    except OSError as e:
        raise SystemExit(f"error: can't read --config {file}: {e.strerror or e}") from e
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise SystemExit(f"error: --config {file} is not valid JSON: {e}") from e
    if not isinstance(values, dict):
        raise SystemExit(f"error: --config {file} must hold one JSON object of {config_class.__name__} fields, "
                         f"not a {type(values).__name__}")
    types = {f.name: f.type for f in dataclasses.fields(config_class)}
    unknown = set(values) - set(types)
    if unknown:
        raise SystemExit(f"error: unknown keys in --config: {sorted(unknown)}")
    for name, value in values.items():
        check, wanted = _JSON_TYPES[types[name]]
        if not check(value):
            raise SystemExit(f"error: --config key {name!r} must be {wanted}, got {json.dumps(value)}")
        if types[name] == "float":
            try:
                values[name] = float(value)  # JSON's 1 for 1.0
            except OverflowError:
                raise SystemExit(f"error: --config key {name!r} is too large for a float: {value}") from None
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]  # one caption file or folder
    return values
