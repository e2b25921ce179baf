"""Silencing third-party noise that no user can act on, only while the noisy call runs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


@contextmanager
def quiet_loggers(*names: str, warning_types: tuple[type[Warning], ...] = ()) -> Iterator[None]:
    """Raise the named loggers to ERROR and ignore `warning_types` for the duration of the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in warning_types:
                warnings.simplefilter("ignore", category)
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def quiet_torchao() -> AbstractContextManager[None]:
    """Importing torchao (transformers does so wherever it is installed) logs that its CUDA-only libraries failed
    to load on a CPU machine, and torch warns about torchao's use of a deprecated pytree call."""
    return quiet_loggers("torchao", "torch.utils._pytree", warning_types=(DeprecationWarning, FutureWarning))
