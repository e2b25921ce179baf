"""Named exceptions of the photo index, each naming what to do next."""


class IndexNotFoundError(FileNotFoundError):
    """No index database at the given path (search, stats and errors never create one)."""


class BuildLockedError(RuntimeError):
    """Another build holds the index's lock; a second build would race it."""


class ModelMismatchError(ValueError):
    """The index was built with one model and is being used with another."""


class SchemaError(RuntimeError):
    """The database was written by a newer vlm-vision, or is not an index database at all."""


class QueryError(ValueError):
    """A search that can't be run as asked: no query, terms that cancel out, a date that isn't one, an empty range."""
