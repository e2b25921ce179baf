"""The `vlm-vision` command: `classify` and `export` here; `train`, `eval`, `train-projector` and `emoji` in their
modules.

    vlm-vision classify IMAGE --labels ... --model NAME_OR_PATH
    vlm-vision export OUT --model NAME_OR_PATH
    vlm-vision train --help
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from .errors import CheckpointError, ImageLoadError
from .inference import MODE_CHOICES, MODE_HELP
from .model import AUTO, DTYPE_CHOICES, DTYPE_HELP

CLASSIFY_EXAMPLE = """examples:
  vlm-vision classify data/samples/red_heart.png --labels "red heart, blue heart, pizza" --template "{}"
  vlm-vision classify photo.jpg --labels "cat, dog, a red apple" \\
      --model google/siglip-base-patch16-224

Each label gets its own sigmoid probability (SigLIP scores every label
independently, so they need not sum to one); labels are printed highest first.
The embedded emoji model was trained on bare emoji names: prompt it with
--template "{}" (the default prompt, "This is a photo of {}.", suits the
pretrained Google checkpoints)."""


# Commands whose own module parses the rest of the command line: (module, help).
COMMANDS = {
    "train": ("vlm_vision.training.train", "train a SigLIP dual encoder on image-caption data"),
    "eval": ("vlm_vision.training.evaluate", "zero-shot top-1/top-5 and text-to-image recall of a model"),
    "train-projector": ("vlm_vision.vlm.train", "teach a language model to see: train a projector (and the LM)"),
    "emoji": ("vlm_vision.emoji.corpus", "build the image-caption corpus of open emoji art"),
}


EXPORT_EXAMPLE = """examples:
  vlm-vision export exported/                      # the embedded emoji model
  vlm-vision export siglip-onnx/ --model google/siglip-base-patch16-224

writes OUT/config.json, model.safetensors, the tokenizer and preprocessor config, and
OUT/onnx/vision_model.onnx, OUT/onnx/text_model.onnx. In ONNX Runtime:
  session = onnxruntime.InferenceSession("OUT/onnx/vision_model.onnx")
  pooled, tokens = session.run(None, {"pixel_values": pixels})   # pixels from ImageProcessor
Normalise the pooled outputs (L2) before comparing images with texts."""


def split_labels(values: list[str]) -> list[str]:
    """Labels from repeated --labels options, each comma- or newline-separated."""
    return [label.strip() for value in values for label in value.replace("\n", ",").split(",") if label.strip()]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm-vision", description="SigLIP tools from vlm-vision.",
                                     epilog=CLASSIFY_EXAMPLE.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser(
        "classify", help="zero-shot classify images against text labels", epilog=CLASSIFY_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Zero-shot classification of images with a SigLIP image-text model.",
    )
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    classify.add_argument("--labels", action="append", required=True,
                          help="comma-separated labels; repeat the option to add more")
    classify.add_argument("--model", default=None,
                          help="Hub id (e.g. google/siglip-base-patch16-224) or a local SigLIP checkpoint folder "
                               "(default: the embedded emoji model, also named 'default')")
    classify.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    classify.add_argument("--template", default=None, help='prompt with {} for the label (default: '
                                                           '"This is a photo of {}.")')
    classify.add_argument("--top", type=positive_int, default=None, help="print only the K most probable labels")
    classify.add_argument("--dtype", default=AUTO, choices=[*DTYPE_CHOICES, "float16"], help=DTYPE_HELP)
    classify.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    classify.add_argument("--mode", default=AUTO, choices=MODE_CHOICES, help=MODE_HELP)
    classify.add_argument("--json", action="store_true", help="print one JSON object per image")
    export = commands.add_parser(
        "export", help="write a checkpoint's towers as ONNX graphs (for ONNX Runtime)", epilog=EXPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write OUT as a checkpoint, and its vision and text towers as ONNX graphs in OUT/onnx "
                    "(vision_model.onnx, text_model.onnx; dynamic batch, float32). Needs the onnx extra: "
                    "pip install 'vlm-vision[onnx]'.",
    )
    export.add_argument("out", metavar="OUT", help="folder to write (created if needed)")
    export.add_argument("--model", default=None, help="Hub id or local SigLIP checkpoint folder (default: the "
                                                      "embedded emoji model)")
    export.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="the only format so far: onnx")
    export.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)")
    for name, (_, help_text) in COMMANDS.items():  # listed for --help; `main` hands them their arguments
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def classify(args: argparse.Namespace) -> None:
    from .inference import choose_mode, optimize
    from .model import DEFAULT_TEMPLATE, DualEncoder, fill_template

    labels = split_labels(args.labels)
    if not labels:
        raise ValueError("--labels has no non-empty label; give e.g. --labels \"cat, dog\"")
    fill_template(args.template or DEFAULT_TEMPLATE, [])  # before the model loads
    model = DualEncoder.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                        revision=args.revision)
    optimize(model, choose_mode(args.device, len(args.images)) if args.mode == AUTO else args.mode)
    for image in args.images:
        ranked = model.classify(image, labels, template=args.template or DEFAULT_TEMPLATE)[: args.top]
        if args.json:
            print(json.dumps({"image": image, "labels": [{"label": lb, "probability": p} for lb, p in ranked]}))
        else:
            print(image)
            for label, probability in ranked:
                print(f"  {probability:8.4f}  {label}")


def export(args: argparse.Namespace) -> None:
    from .export import export_onnx
    from .model import DualEncoder

    model = DualEncoder.from_pretrained(args.model, revision=args.revision)
    for path in export_onnx(model, args.out, opset=args.opset):
        print(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        {"classify": classify, "export": export}[args.command](args)
    except (CheckpointError, ImageLoadError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
