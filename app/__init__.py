"""The Gradio app: `vlm-app`, or `vlm_vision.app.build_demo(index, model)` for a `gr.Blocks` to launch yourself."""


def build_demo(*args, **kwargs):
    from .ui import build_demo as build  # imports gradio (seconds): only when asked

    return build(*args, **kwargs)


__all__ = ["build_demo"]
