"""Shared fixtures: the offline environment, and a real OpenAI-compatible server (llama.cpp, bundled SmolLM2) on
127.0.0.1, both from `bench/common.py`, which the bench scripts use too."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import go_offline, llama_server as serve_llama  # noqa: E402

go_offline()  # before any test module imports archivesrag


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` with the bundled GGUF, 2 threads, the model named `smollm2`: its base URL (…/v1)."""
    with serve_llama(tmp_path_factory.mktemp("llama") / "server.log", threads=2) as base:
        yield base
