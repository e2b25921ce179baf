"""`vlm-app`: the Gradio app on 127.0.0.1:7860, over the embedded model and a demo index by default."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

from vlm_vision.cache import cache_dir
from vlm_vision.inference import MODE_CHOICES, MODE_HELP
from vlm_vision.model import AUTO, DTYPE_CHOICES, DTYPE_HELP

EXAMPLE = """examples:
  vlm-app                                   # the embedded model and a demo index of the sample images
  vlm-app --index ~/Pictures/.vlm-index.db  # your own index (vlm-index build ~/Pictures --db ...)
  vlm-app --host 0.0.0.0 --auth-file ~/.config/vlm-app.auth   # reachable from other machines, with a login

A login is USER:PASSWORD in a file (--auth-file) or in $VLM_APP_AUTH, never on the command line, where shell
history and `ps` would keep the password. Any --host but this machine's needs a login, or --open."""

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "VLM_APP_AUTH"  # USER:PASSWORD


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm-app", description="Photo search and zero-shot classification.",
                                     epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=None,
                        help="index database (default: your default index if it exists, else a demo index of "
                             "the sample images)")
    parser.add_argument("--model", default=None, help="SigLIP model (default: the index's own, else the embedded one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only); any other needs a login "
                             "(--auth-file or $VLM_APP_AUTH) or --open")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help=f"require the login USER:PASSWORD written in FILE (or set ${AUTH_ENV})")
    parser.add_argument("--open", action="store_true",
                        help="serve a non-local --host without a login: anyone who reaches the port can search "
                             "your photos")
    parser.add_argument("--auth", default=None, help=argparse.SUPPRESS)  # refused: the password would be in history
    parser.add_argument("--captioner", default=None,
                        help="vision-language model for the Describe tab (default: the embedded emoji-captioner "
                             "when present)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--dtype", default=AUTO, choices=DTYPE_CHOICES, help=DTYPE_HELP)
    parser.add_argument("--mode", default=AUTO, choices=MODE_CHOICES, help=MODE_HELP)
    parser.add_argument("--max-upload-mb", type=int, default=25, help="largest upload accepted (25 MB)")
    return parser


def demo_index(samples: Path | None = None) -> Path:
    """A small index of the sample images in the user's cache, built (or brought up to date) now.

    It is a cache: built with an earlier embedded model (an older vlm-vision), it is rebuilt. Each copy of the
    samples (a checkout, an installed wheel) has its own, so that no search shows the same picture twice.
    """
    from vlm_vision.checkpoints import SAMPLES
    from vlm_vision.index import ModelMismatchError, PhotoIndex

    samples = samples or SAMPLES
    cache = cache_dir("demo")
    db = cache / f"samples-{hashlib.sha1(str(samples.resolve()).encode()).hexdigest()[:12]}.db"

    def build() -> None:
        with PhotoIndex(db, create=True) as index:
            index.build([samples], workers=0)

    try:
        build()
    except ModelMismatchError:  # an earlier embedded model's: only a cache, so start afresh
        for path in cache.glob(db.name + "*"):  # the database, its WAL, FAISS file and lock
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        build()
    return db


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry, no version check
    try:
        auth = read_auth(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in LOCAL_HOSTS:
        if auth is None and not args.open:
            print(f"error: --host {args.host} lets other machines reach the app, and so your photos: set a login "
                  f"(USER:PASSWORD in a file given by --auth-file, or in ${AUTH_ENV}), or pass --open to serve "
                  f"without one.", file=sys.stderr)
            return 2
        print(f"WARNING: binding {args.host}: anyone who can reach this machine on port {args.port} "
              f"{'and logs in ' if auth else ''}can search your indexed photos"
              f"{'' if auth else ' (--open: no login)'}.", file=sys.stderr)

    from vlm_vision.index import default_db_path

    from .backend import Backend
    from .ui import build_demo

    index = Path(args.index).expanduser() if args.index else (
        default_db_path() if default_db_path().exists() else demo_index())
    print(f"Index: {index}")
    import faiss

    from vlm_vision.errors import CheckpointError
    from vlm_vision.index import ModelMismatchError, SchemaError

    faiss.omp_set_num_threads(1)  # single queries: see index/__main__.py
    try:
        backend = Backend(index, args.model, device=args.device, dtype=args.dtype, mode=args.mode,
                          captioner=args.captioner)
    except (ModelMismatchError, SchemaError, CheckpointError, ValueError) as e:  # ValueError: a device not here
        print(f"error: {e}", file=sys.stderr)
        return 1
    demo = build_demo(backend=backend)
    demo.queue(default_concurrency_limit=4).launch(**launch_options(backend, args.host, args.port, auth,
                                                                    args.max_upload_mb))
    return 0


def read_auth(args: argparse.Namespace) -> tuple[str, str] | None:
    """The login (user, password) from --auth-file or $VLM_APP_AUTH; None without either. ValueError says what is
    wrong: a password on the command line, an unreadable file, or no USER:PASSWORD in it."""
    if args.auth is not None:
        raise ValueError(f"--auth puts the password in your shell history and in `ps`: write USER:PASSWORD into a "
                         f"file readable only by you and pass --auth-file FILE, or set ${AUTH_ENV}")
    if args.auth_file is not None:
        path = Path(args.auth_file).expanduser()
        try:
            text, where = path.read_text().strip(), f"--auth-file {path}"
        except OSError as e:
            raise ValueError(f"Can't read --auth-file {path}: {e.strerror or e}") from e
        if path.stat().st_mode & 0o077:
            print(f"WARNING: {path} is readable by other users; chmod 600 it.", file=sys.stderr)
    elif os.environ.get(AUTH_ENV):
        text, where = os.environ[AUTH_ENV].strip(), f"${AUTH_ENV}"
    else:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{where} must hold USER:PASSWORD (one line)")
    return user, password


def launch_options(backend, host: str, port: int, auth: tuple[str, str] | None = None,
                   max_upload_mb: int = 25) -> dict:
    """`Blocks.launch` arguments: local-only by default, no share link, and only thumbnails and samples served."""
    from vlm_vision.checkpoints import SAMPLES

    return dict(server_name=host, server_port=port, auth=auth, share=False, ssr_mode=False,
                max_file_size=f"{max_upload_mb}mb", allowed_paths=[str(backend.thumbnails.folder), str(SAMPLES)],
                footer_links=["api"])


if __name__ == "__main__":
    sys.exit(main())
