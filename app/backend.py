"""What the app does, without the UI: search, classify, explain, index a folder, report status.

Everything here is plain Python returning plain values, so it is tested without
a browser; app/ui.py turns it into Gradio components. Errors meant for the user
are `UserError`s with a message that says what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from vlm_vision.checkpoints import DEFAULT_CAPTIONER, DEFAULT_MODEL_NAME
from vlm_vision.errors import ImageLoadError
from vlm_vision.explain import attention_grids, overlay_heatmap, pooling_attention
from vlm_vision.inference import mode_of, optimize
from vlm_vision.index import (
    BuildLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    PhotoIndex,
    QueryError,
    SchemaError,
)
from vlm_vision.model import AUTO, DualEncoder, load_image, vision_inputs

from .thumbnails import ThumbnailCache

logger = logging.getLogger(__name__)

# Uploads above this many pixels are refused (a 12,000 x 8,000 photo is 96 million).
MAX_UPLOAD_PIXELS = 100_000_000
MAX_LABELS = 200
HEATMAP_SIZE = 384  # longest side of the attention picture, pixels


class UserError(ValueError):
    """A problem with what the user gave (an upload, labels, a folder); the message says what to do."""


@dataclass(frozen=True)
class Result:
    path: str
    score: float
    thumbnail: str
    missing: bool = False  # the file can't be read any more (moved, deleted, on an unmounted drive): a grey tile


def split_labels(text: str) -> list[str]:
    """Labels separated by commas or new lines, stripped, empty ones and repeats dropped."""
    labels = [label.strip() for label in text.replace("\n", ",").split(",")]
    return list(dict.fromkeys(label for label in labels if label))


class Backend:
    """The model and the index, loaded once and shared by every request."""

    def __init__(self, index: str | os.PathLike | None, model: str | os.PathLike | None = None, *,
                 device: str = "cpu", dtype: str = AUTO, mode: str = AUTO,
                 thumbnails: str | os.PathLike | None = None, captioner: str | os.PathLike | None = None) -> None:
        self.index_path = Path(index) if index is not None else None
        self.index: PhotoIndex | None = None
        self.index_problem: str | None = None  # why there is no index to search, shown in the UI
        recorded = None
        if self.index_path is not None:
            try:
                self.index = PhotoIndex(self.index_path, model, device=device, dtype=dtype, mode=mode)
                recorded = self.index.db.model_info()
            except (IndexNotFoundError, SchemaError) as e:
                self.index_problem = str(e)
        name = model or (recorded.name if recorded else None)
        if self.index is not None and recorded is not None:
            self.model = self.index.model  # loads the index's model (or `model`), checked against the index
        else:
            self.model = DualEncoder.from_pretrained(name, device=device, dtype=dtype)  # None: the embedded one
            if mode != AUTO:
                optimize(self.model, mode)
            if self.index is not None:  # an empty index: use it with this model
                self.index = PhotoIndex(self.index_path, self.model)
        self.model_name = str(name or DEFAULT_MODEL_NAME)
        if thumbnails is None:  # beside the index (hidden from scans when the index sits inside a photo folder)
            thumbnails = (self.index_path.with_name(self.index_path.name + ".thumbnails") if self.index_path
                          else Path(tempfile.mkdtemp(prefix="vlm-vision-thumbnails-")))
        self.thumbnails = ThumbnailCache(Path(thumbnails))
        self._lock = threading.Lock()  # one SQLite connection, one request at a time
        # The Describe tab's vision-language model: given, else the embedded demo when it is there.
        self.captioner_path = Path(captioner) if captioner else (DEFAULT_CAPTIONER if DEFAULT_CAPTIONER.is_dir()
                                                                 else None)
        self._captioner = None
        self._device = device

    # -- search ---------------------------------------------------------------------------------------------

    def search(self, text: str = "", image: str | None = None, negative: str = "", k: int = 12,
               under: str = "", since: str = "", until: str = "", camera: str = "",
               min_score: float | None = None) -> list[Result]:
        """The `k` best matches scoring at least `min_score` (a cosine; None: any); `since`, `until` (a day, month or
        year, both included) and `camera` filter by EXIF."""
        if self.index is None:
            raise UserError(self.index_problem or "No index loaded. Index a folder first (below).")
        if not text.strip() and not image:
            raise UserError("Type what to look for, or give an image to find similar ones.")
        if image and not os.path.isfile(image):
            raise UserError(f"The image {image!r} is not a file.")
        if under.strip() and not os.path.isdir(os.path.expanduser(under.strip())):
            raise UserError(f"The folder filter {under!r} is not a folder.")
        query_image = None
        if image:  # an indexed file ("more like this") searches by its stored vector; an upload is decoded
            indexed = self.index.db.indexed_file(os.path.abspath(image)) is not None
            query_image = image if indexed else self._open_upload(image)
        with self._lock:
            try:
                hits = self.index.search(text or None, image=query_image, negative=negative or None, k=int(k),
                                         under=under.strip() or None, since=since.strip() or None,
                                         until=until.strip() or None, camera=camera or None, min_score=min_score)
            except ModelMismatchError as e:
                raise UserError(str(e)) from e
            except QueryError as e:  # a date that isn't one, terms that cancel out, ...
                raise UserError(str(e)) from e
            except sqlite3.OperationalError as e:  # a locked, vanished or unreadable file: not damage
                raise UserError(f"The index can't be read right now ({e}). Try again; if it persists, check the "
                                f"index's folder ({self.index_path}).") from e
            except sqlite3.DatabaseError as e:  # pages damaged since the index opened
                raise UserError(f"The index database is damaged ({e}). Run `vlm-index repair --db "
                                f"{self.index_path}` to see what can be mended; if SQLite finds the file itself "
                                f"damaged, build a new index. Your photos are not touched.") from e
            return [self._result(h.path, h.score, h.file.hash) for h in hits]

    def _result(self, path: str, score: float, content_hash: str) -> Result:
        try:
            return Result(path, score, str(self.thumbnails.get(path, content_hash)))
        except ImageLoadError as e:  # indexed, then moved or deleted: the hit stays, with a grey tile
            logger.info("No thumbnail for %s: %s", path, e.reason)
            return Result(path, score, str(self.thumbnails.placeholder()), missing=True)

    # -- classify and explain ---------------------------------------------------------------------------------

    def _open_upload(self, path: str | None) -> Image.Image:
        if not path:
            raise UserError("Upload an image first.")
        try:
            return load_image(path, max_pixels=MAX_UPLOAD_PIXELS)
        except ImageLoadError as e:
            raise UserError(f"That file can't be used as an image: {e.reason}. Upload a JPEG, PNG, WebP, GIF, "
                            f"BMP or TIFF file.") from e

    def classify(self, image: str | None, labels: str, template: str = "{}") -> dict[str, float]:
        """Each label's sigmoid probability (SigLIP scores each label on its own; they need not sum to 1)."""
        picture, names = self._open_upload(image), self._labels(labels, template)
        return dict(self.model.classify(picture, names, template=template))

    def classify_and_heatmap(self, image: str | None, labels: str, template: str = "{}"
                             ) -> tuple[dict[str, float], Image.Image]:
        """The Classify tab's two answers, `classify`'s and `heatmap`'s, from one pass of the exact tower; a compiled
        tower (modes fast and int8) answers `classify` itself, and the heatmap comes from a second pass."""
        tower = getattr(self.model.vision, "exact", None)  # an ONNX tower keeps the exact one beside it
        if tower is None and mode_of(self.model) != "exact":  # compiled: its forward would run uncompiled, slowly
            return self.classify(image, labels, template), self.heatmap(image)
        tower = tower or self.model.vision
        picture, names = self._open_upload(image), self._labels(labels, template)
        inputs = self.model.processor([picture])
        with torch.inference_mode():
            out = tower.forward(**vision_inputs(inputs, tower.device), output_head_attention=True)
        embedding = F.normalize(out.pooler_output[0].float(), dim=-1)
        # The index's query cache embeds repeated labels once; without an index, the model does each time.
        texts = self.index.text_vectors if self.index is not None else None
        probabilities = dict(self.model.classify_embedding(embedding, names, template=template, text_vectors=texts))
        return probabilities, self._overlay(picture, attention_grids(out.head_attention, inputs,
                                                                     tower.config.patch_size)[0])

    def _labels(self, labels: str, template: str) -> list[str]:
        names = split_labels(labels or "")
        if not names:
            raise UserError("Type at least one label, separated by commas or new lines (e.g. cat, dog, pizza).")
        if len(names) > MAX_LABELS:
            raise UserError(f"{len(names)} labels is too many; give at most {MAX_LABELS}.")
        if "{}" not in (template or ""):
            raise UserError('The prompt template needs {} where the label goes, e.g. "a photo of {}."')
        return names

    def heatmap(self, image: str | Image.Image | None) -> Image.Image:
        """The image with the attention-pooling head's weights drawn over it."""
        picture = image if isinstance(image, Image.Image) else self._open_upload(image)
        tower = getattr(self.model.vision, "exact", self.model.vision)  # an ONNX tower keeps the exact one beside it
        return self._overlay(picture, pooling_attention(tower, self.model.processor([picture]))[0])

    @staticmethod
    def _overlay(picture: Image.Image, grid: torch.Tensor) -> Image.Image:
        scale = HEATMAP_SIZE / max(picture.size)  # small images (emoji) are drawn larger, large ones smaller
        shown = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                               Image.Resampling.LANCZOS)
        return overlay_heatmap(shown, grid.cpu())

    # -- describe ---------------------------------------------------------------------------------------------

    def describe(self, image: str | None, max_new_tokens: int = 16) -> str:
        """The captioning model's text for an uploaded image (its training prompt, greedy decoding)."""
        if self.captioner_path is None:
            raise UserError("No captioning model: start the app with --captioner PATH.")
        picture = self._open_upload(image)
        if self._captioner is None:
            from vlm_vision import VisionLanguageModel

            self._captioner = VisionLanguageModel.from_pretrained(self.captioner_path, device=self._device)
        return self._captioner.generate([picture], max_new_tokens=max_new_tokens)[0].strip()  # its trained prompt

    # -- indexing and status ----------------------------------------------------------------------------------

    def build(self, folder: str, progress: Callable[[float, str], None] | None = None) -> str:
        """Index `folder` into the app's index (created if needed); returns the summary line."""
        folder = os.path.expanduser((folder or "").strip())
        if not folder or not os.path.isdir(folder):
            raise UserError(f"{folder!r} is not a folder on this machine. Type the full path of a photo folder.")
        if self.index_path is None:
            raise UserError("The app was started without --index, so there is nowhere to store one.")

        def report(p) -> None:
            if progress is not None and p.total:
                progress(p.done / p.total, f"{p.done} / {p.total} files")

        # A connection of its own: the build's transactions must not interleave with searches on this one.
        try:
            builder = PhotoIndex(self.index_path, self.model, create=True)
        except (IndexNotFoundError, SchemaError) as e:  # --index is a folder, or a file that isn't an index
            raise UserError(str(e)) from e
        try:
            summary = builder.build([folder], progress=report)
        except (BuildLockedError, ModelMismatchError) as e:
            raise UserError(str(e)) from e
        finally:
            builder.close()
        with self._lock:
            if self.index is None:
                self.index = PhotoIndex(self.index_path, self.model)
                self.index_problem = None
        return (f"{summary.added} added, {summary.updated} updated, {summary.reused} reused, {summary.removed} "
                f"removed, {summary.skipped} skipped, {summary.unchanged} unchanged "
                f"({summary.encoded} images encoded in {summary.seconds:.1f} s).")

    def forget(self, folder: str) -> str:
        """Remove what the index holds under `folder` (which may be gone: renamed or retired); the summary line."""
        folder = (folder or "").strip()
        if not folder:
            raise UserError("Type the full path of the folder to remove from the index.")
        if self.index is None:
            raise UserError(self.index_problem or "No index loaded, so there is nothing to remove.")
        with self._lock:
            try:
                files, skipped = self.index.forget([folder])
            except (BuildLockedError, ValueError) as e:  # a build running; nothing under it (a typo, most likely)
                raise UserError(str(e)) from e
        return f"Removed {files} images and {skipped} skip records under {folder} from the index."

    def status(self) -> str:
        """Markdown: the model and the index, with their sizes."""
        params = sum(p.numel() for p in self.model.parameters())
        dim = self.model.vision.config.hidden_size  # the pooled image embedding's size
        lines = [f"**Model:** `{self.model_name}`: {params / 1e6:.1f}M parameters, embedding dim {dim}, "
                 f"{self.model.vision.config.image_size}px input, on {self.model.device}"]
        if self.index is None:
            lines.append(f"**Index:** none. {self.index_problem or ''}")
        else:
            with self._lock:
                s = self.index.stats()
            lines.append(f"**Index:** `{s.db_path}`: {s.files} images ({s.vectors} distinct), {s.skipped} skipped, "
                         f"FAISS {s.index_type or '-'}, {(s.db_bytes + s.ann_bytes) / 1e6:.1f} MB")
            for root in s.roots:
                lines.append(f"- `{root}`")
        return "\n\n".join(lines)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

