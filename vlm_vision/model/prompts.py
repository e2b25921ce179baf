"""Prompt templates: the text a label is put into ("This is a photo of {}."), checked in one place."""

from __future__ import annotations

from collections.abc import Sequence


def fill_template(template: str, names: Sequence[str], slot: str = "the label") -> list[str]:
    """`template` with each of `names` where its one `{}` is; a ValueError says what a template needs.

    A template without `{}` would give every label the same prompt (and the same score), and `str.format`
    fails on a lone brace with an error that names neither the template nor the fix.
    """
    if template.count("{}") != 1 or any(brace in template.replace("{}", "") for brace in "{}"):
        raise ValueError(f"A prompt template needs one {{}} where {slot} goes and no other braces, e.g. "
                         f"'a photo of {{}}.'; got {template!r}")
    return [template.replace("{}", name) for name in names]
