# One-command set-up on a fresh machine. torch is installed first and pinned:
# a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Where pip reads PyPI, Linux gets the CUDA build; TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU one.
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: setup test app demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# The main job on the embedded default model, offline: the app on http://127.0.0.1:7860,
# with a demo index of the sample images (or your default index, once you have built one).
app: setup
	$(BIN)/vlm-app

# Zero-shot classify two sample images from the command line.
demo: setup
	$(BIN)/vlm-vision classify data/samples/red_heart.png data/samples/pizza.png \
		--labels "red heart, blue heart, pizza, rocket, thumbs up" --template "{}"

bench: setup
	$(BIN)/python benchmarks/vision_tower.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
