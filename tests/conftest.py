"""Shared fixtures: a real OpenAI-compatible server (llama.cpp, bundled SmolLM2) on 127.0.0.1."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """Start `python -m llama_cpp.server` with the bundled GGUF; yield its base URL (…/v1)."""
    from archivesrag.models import bundled_gguf_path

    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
           "--model_alias", "smollm2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/models", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("llama_cpp.server did not start within 120 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
