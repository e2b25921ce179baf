"""Named exceptions that callers of vlm_vision catch.

Each one subclasses the built-in exception a caller would otherwise expect
(`ValueError`, `OSError`), so generic handlers keep working.
"""


class CheckpointError(ValueError):
    """A checkpoint can't be turned into the model that was asked for.

    Raised for missing, unexpected or wrong-shape weights, for checkpoints of
    another architecture, and for refused formats (pickle without opt-in).
    The message names the keys or files involved and what to do.
    """


class ImageLoadError(OSError):
    """An image file can't be opened or decoded (corrupt, truncated, not an image, too large).

    `reason` is the cause alone, without the file name, for lists that already show the path.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message
