"""Photo index: encode photo folders with a SigLIP model into FAISS + SQLite, and search them.

Command line: `vlm-index build FOLDER`, `vlm-index search "a dog"`;
Python: `vlm_vision.index.PhotoIndex`.
"""

from .build import BuildProgress, BuildSummary
from .db import IndexedFile, ModelInfo, SkippedFile
from .errors import BuildLockedError, IndexNotFoundError, ModelMismatchError, QueryError, SchemaError
from .photo_index import IndexStats, PhotoIndex, RepairReport, SearchHit, default_db_path

__all__ = [
    "BuildLockedError",
    "BuildProgress",
    "BuildSummary",
    "IndexNotFoundError",
    "IndexStats",
    "IndexedFile",
    "ModelInfo",
    "ModelMismatchError",
    "PhotoIndex",
    "RepairReport",
    "QueryError",
    "SchemaError",
    "SearchHit",
    "SkippedFile",
    "default_db_path",
]
