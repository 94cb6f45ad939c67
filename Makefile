# One entry point per job. `make demo` and `make test` work on a fresh machine: they create .venv,
# install the pinned Python packages and the Debian packages the project needs, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out

.PHONY: setup system-deps demo test test-all test-quick bench clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Cross toolchains, QEMU and mmdebstrap for the Raspberry Pi targets (idempotent; apt-get only if missing).
system-deps:
	bash scripts/install_system_deps.sh

# The default model (trained on the synthetic temporal-order task) end to end on a fresh sample video:
# compile with the committed records, label timeline, parity vs PyTorch, latency vs ONNX Runtime.
demo: setup
	$(BIN)/python scripts/demo.py --output $(OUT)

# What CI runs: every test but the few marked heavy (minutes each, or large downloads), on
# TEST_WORKERS processes (pytest-xdist), each test file whole on one of them (its fixtures built once).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not heavy" --durations=25

test-all: setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=25

# The quick subset while working: no full-size compiles, no emulation, no RPC.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Side-by-side latency (TVM vs ONNX Runtime vs PyTorch) of the default model with the committed
# tuning records; writes benchmarks/<target>.json and .png. Run on an idle machine.
BENCH_TARGET ?= x86-avx512
bench: setup
	$(BIN)/python scripts/bench.py --target $(BENCH_TARGET) --output benchmarks/

clean:
	rm -rf $(OUT) .pytest_cache
