"""The Gradio interface: a Search tab and a Classify tab over one `Backend`.

`build_demo(...)` builds the Blocks and loads the model and index once; it never
launches anything (app/__main__.py does). Handlers turn `UserError` and image
errors into `gr.Error`, which the page shows as a message, never a stack trace.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from vlm_vision.checkpoints import SAMPLES
from vlm_vision.errors import ImageLoadError

from .backend import Backend, UserError

DEFAULT_LABELS = "red heart, blue heart, pizza, rocket, thumbs up, cat face, dog face, red apple, sun, rainbow"


def friendly(fn: Callable) -> Callable:
    """Show what went wrong as a message on the page instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, ImageLoadError) as e:
            raise gr.Error(str(e), print_exception=False) from e
    return wrapper


def image_upload(**kwargs) -> gr.Image:
    """A gr.Image whose unreadable uploads give a message: gr.Image alone fails inside Gradio with a bare error.

    image_mode=None hands the file over as uploaded: gr.Image's default "RGB" converts RGBA by dropping alpha,
    which turns transparent backgrounds black, while load_image composites them onto white as SigLIP's
    processor does. (A gr.Image subclass would do too, but Gradio writes a .pyi file beside any module that
    defines one.)
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception as e:  # noqa: BLE001 - whatever PIL raised, the user gets the same advice
            raise gr.Error(f"That file can't be read as an image ({type(e).__name__}). Upload a JPEG, PNG, WebP, "
                           f"GIF, BMP or TIFF file.", print_exception=False) from e

    component.preprocess = checked
    return component


def sample_images() -> list[str]:
    return sorted(str(p) for p in SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []


# Requests of a kind that run at once. Measured with 16 clients on 2 cores (benchmarks/app_load.py): 4 searches
# and 1 classify gave text-search p95 0.10 s, classify p95 1.8 s; 1 and 2: 1.2 s, 0.19 s; 4 and 4: 1.2-1.4 s.
SEARCH_WORKERS = 4
CLASSIFY_WORKERS = 1


def build_demo(index: str | os.PathLike | None = None, model: str | os.PathLike | None = None, *,
               device: str = "cpu", backend: Backend | None = None) -> gr.Blocks:
    """The app's Blocks over `index` (a database path) and `model` (default: the index's model)."""
    backend = backend or Backend(index, model, device=device)
    # Thumbnails and samples are served from where they are: never rewritten, they need no copy in Gradio's cache
    # (copying 12 per search took a tenth of the app's time under load).
    gr.set_static_paths([str(backend.thumbnails.folder), *([str(SAMPLES)] if SAMPLES.is_dir() else [])])
    template_default = "{}" if backend.model_name == "default" else "This is a photo of {}."

    @friendly
    def search(text, image, negative, k, under, since, until, camera, min_score):
        results = backend.search(text or "", image, negative or "", int(k), under or "", since or "", until or "",
                                 camera or "", min_score)
        if not results:
            gr.Info("No results. Try other words, or remove the filters and the minimum score.")
        gallery = [(r.thumbnail, f"{r.score:.3f}  {Path(r.path).name}" + ("  (file not found)" if r.missing else ""))
                   for r in results]
        return gallery, [r.path for r in results], None, ""

    @friendly
    def more_like_this(selected, k, *filters):
        if not selected:
            raise UserError("Click a result first, then 'More like this'.")
        return search("", selected, "", k, *filters)

    def select(paths, evt: gr.SelectData):
        path = paths[evt.index] if paths and evt.index is not None and evt.index < len(paths) else None
        return path, f"Selected: `{path}`" if path else ""

    @friendly
    def explain_result(selected):
        if not selected:
            raise UserError("Click a result first, then 'Where does the model look?'.")
        return backend.heatmap(selected)

    @friendly
    def classify(image, labels, template):
        return backend.classify_and_heatmap(image, labels, template)

    @friendly
    def describe(image):
        return backend.describe(image)

    @friendly
    def build(folder, progress=gr.Progress()):
        summary = backend.build(folder, lambda fraction, text: progress(fraction, desc=text))
        return summary, backend.status()

    @friendly
    def forget(folder):
        return backend.forget(folder), backend.status()

    with gr.Blocks(title="vlm-vision", analytics_enabled=False) as demo:
        gr.Markdown("# vlm-vision\nSearch your photos with words or images, and classify images with any labels: "
                    "a SigLIP model running on this machine, offline.")
        status = gr.Markdown(backend.status(), elem_id="status")
        with gr.Tab("Search", elem_id="search-tab"):
            with gr.Row():
                query = gr.Textbox(label="Search", placeholder="e.g. red apple", scale=5, elem_id="query")
                search_button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
            with gr.Accordion("More ways to search", open=False):
                with gr.Row():
                    image_query = image_upload(label="Find images like this one",
                                               sources=["upload", "clipboard"], height=180, elem_id="image-query")
                    with gr.Column():
                        negative = gr.Textbox(label="But not", placeholder="e.g. night", elem_id="negative")
                        under = gr.Textbox(label="Only in this folder", placeholder="/home/me/Pictures/2024",
                                           elem_id="under")
                        with gr.Row():  # EXIF date taken and camera; photos without a date drop out of date filters
                            since = gr.Textbox(label="Taken from", placeholder="2024-06 (or 2024, 2024-06-15)",
                                               elem_id="since")
                            until = gr.Textbox(label="Taken until (included)", placeholder="2024-08",
                                               elem_id="until")
                            camera = gr.Textbox(label="Camera", placeholder="e.g. pixel", elem_id="camera")
                        with gr.Row():
                            k = gr.Slider(1, 100, value=12, step=1, label="Number of results", elem_id="k")
                            # The score shown beside each result; what counts as a good one depends on the model.
                            min_score = gr.Number(None, label="Minimum score (empty: any)", placeholder="e.g. 0.1",
                                                  minimum=-1, maximum=1, step=0.01, elem_id="min-score")
            gallery = gr.Gallery(label="Results (score, file name)", columns=6, height="auto", object_fit="contain",
                                 elem_id="results")
            paths = gr.State([])
            selected = gr.State(None)
            selected_text = gr.Markdown(elem_id="selected")
            with gr.Row():
                more_button = gr.Button("More like this", elem_id="more-like-this")
                explain_button = gr.Button("Where does the model look?", elem_id="explain-result")
            result_heatmap = gr.Image(label="Attention of the pooling head over the selected image",
                                      interactive=False, height=320, elem_id="result-heatmap")
            with gr.Accordion("Index a folder", open=backend.index is None):
                gr.Markdown("Indexing reads every image under the folder once; later runs only read what changed. "
                            "A folder renamed or retired stays in the index (it might be an unmounted drive) "
                            "until you remove it. From a terminal: `vlm-index build FOLDER --db INDEX`, "
                            "`vlm-index forget FOLDER --db INDEX`.")
                with gr.Row():
                    folder = gr.Textbox(label="Folder", placeholder="/home/me/Pictures", scale=5, elem_id="folder")
                    build_button = gr.Button("Index folder", scale=1, elem_id="build-button")
                    forget_button = gr.Button("Remove from index", scale=1, elem_id="forget-button")
                build_result = gr.Markdown(elem_id="build-result")

        with gr.Tab("Classify", elem_id="classify-tab"):
            with gr.Row():
                with gr.Column():
                    image = image_upload(label="Image", sources=["upload", "clipboard"], height=300,
                                         elem_id="classify-image")
                    labels = gr.Textbox(label="Labels, separated by commas or new lines", value=DEFAULT_LABELS,
                                        lines=3, elem_id="labels")
                    template = gr.Textbox(label="Prompt template ({} is the label)", value=template_default,
                                          elem_id="template")
                    classify_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                with gr.Column():
                    probabilities = gr.Label(label="Sigmoid probability of each label", num_top_classes=10,
                                             elem_id="probabilities")
                    heatmap = gr.Image(label="Where the pooled embedding looks (attention-pooling head)",
                                       interactive=False, height=300, elem_id="classify-heatmap")
            if sample_images():
                gr.Examples(examples=[[p] for p in sample_images()], inputs=[image], label="Sample images")

        if backend.captioner_path is not None:
            with gr.Tab("Describe", elem_id="describe-tab"):
                gr.Markdown("A small vision-language model (our vision tower, a projector and a causal LM) names "
                            "what it sees. The embedded demo was trained to name emoji.")
                with gr.Row():
                    describe_image = image_upload(label="Image", sources=["upload", "clipboard"], height=300,
                                                  elem_id="describe-image")
                    with gr.Column():
                        describe_button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                        description = gr.Textbox(label="Generated text", interactive=False, elem_id="description")
                if sample_images():
                    gr.Examples(examples=[[p] for p in sample_images()], inputs=[describe_image],
                                label="Sample images")
            describe_button.click(describe, [describe_image], [description], api_name="describe")

        filters = [under, since, until, camera, min_score]
        search_inputs = [query, image_query, negative, k, *filters]
        search_outputs = [gallery, paths, selected, selected_text]
        # Every way to search shares SEARCH_WORKERS; classify, which runs the tower and draws a heatmap, gets
        # CLASSIFY_WORKERS of its own, so that it never starves the quick searches (docs/app.md#under-load).
        searches = dict(concurrency_id="search", concurrency_limit=SEARCH_WORKERS)
        search_button.click(search, search_inputs, search_outputs, api_name="search", **searches)
        query.submit(search, search_inputs, search_outputs, api_name=False, **searches)
        gallery.select(select, [paths], [selected, selected_text], api_name=False)
        more_button.click(more_like_this, [selected, k, *filters], search_outputs, api_name=False, **searches)
        explain_button.click(explain_result, [selected], [result_heatmap], api_name=False)
        build_button.click(build, [folder], [build_result, status], api_name="index_folder")
        forget_button.click(forget, [folder], [build_result, status], api_name="forget_folder")
        classify_button.click(classify, [image, labels, template], [probabilities, heatmap], api_name="classify",
                              concurrency_limit=CLASSIFY_WORKERS)
    return demo
