"""What the bench scripts share, with each other and with the tests (`tests/conftest.py` imports this file):

- `OFFLINE_ENV`, `go_offline()`, `offline_env()`: the bundled models only, never the Hugging Face Hub;
- `start_llama_server()`, `llama_server()`, `stop_server()`: llama.cpp's OpenAI-compatible server
  (`python -m llama_cpp.server`) with the bundled SmolLM2 GGUF on a free port of 127.0.0.1;
- `scrub_paths()`: a file that is committed holds no path of this machine.

A bench script runs as `python bench/<script>.py`, so this folder is first on `sys.path` and `from common import …`
finds this file. Import it, and call `go_offline()`, before anything imports archivesrag, transformers or datasets.
"""
import os
import site
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OFFLINE_ENV = {"ARCHIVESRAG_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
"The environment of an offline run: archivesrag substitutes the bundled models, and no library asks the Hub."


def go_offline(env=None):
    "Set each of `OFFLINE_ENV` in `env` (default: `os.environ`) that is not set already; return `env`."
    env = os.environ if env is None else env
    for k, v in OFFLINE_ENV.items(): env.setdefault(k, v)
    return env


def offline_env(**extra) -> dict:
    "The environment for a child process: this one's, offline, and `extra`."
    return {**go_offline(dict(os.environ)), **extra}


# ---- llama.cpp's OpenAI-compatible server --------------------------------------------------------------------------

def free_port() -> int:
    "A TCP port of 127.0.0.1 that nothing listens on now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen, wait_s: float = 10) -> None:
    "Terminate `proc`, and kill it if it has not ended within `wait_s` seconds."
    if proc.poll() is not None: return
    proc.terminate()
    try: proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait()


def start_llama_server(log: str | Path, threads: int = 2, n_ctx: int = 4096, model: str | Path | None = None,
                       alias: str = "smollm2", wait_s: float = 120) -> tuple[subprocess.Popen, str]:
    """Start `python -m llama_cpp.server` with `model` (default: the bundled SmolLM2 GGUF) on a free port of
    127.0.0.1, its output in `log`; return `(process, base URL …/v1)` once it answers `GET /models`. The model is
    served under the name `alias`. Raises RuntimeError, with the log's end, if it exits or does not answer in time."""
    if model is None:
        from archivesrag.models import bundled_gguf_path
        model = bundled_gguf_path()
    port, log = free_port(), Path(log)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--model_alias", alias]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=offline_env())
    base, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early (status {proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/models", timeout=2)
            return proc, base
        except OSError: pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"llama_cpp.server did not answer within {wait_s:.0f} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


@contextmanager
def llama_server(log: str | Path, **kw):
    "`start_llama_server(log, **kw)` as a context manager: yields the base URL, stops the server on the way out."
    proc, base = start_llama_server(log, **kw)
    try: yield base
    finally: stop_server(proc)


# ---- machine paths in committed files ------------------------------------------------------------------------------

def path_replacements(repo_as: str = "") -> list[tuple[str, str]]:
    """`(path, shown as)` pairs, longest path first (site-packages lies inside the checkout's .venv): site-packages
    as `<site-packages>`, this checkout's folder followed by `/` as `repo_as` (default: paths relative to it), the
    home folder as `~`."""
    pairs = [(p, "<site-packages>") for p in site.getsitepackages() + [site.getusersitepackages()]]
    pairs += [(str(REPO) + "/", repo_as)] + [(h, "~") for h in [str(Path.home())] if len(h) > 1]  # not a home of "/"
    return sorted(pairs, key=lambda p: -len(p[0]))


def scrub_paths(text: str, repo_as: str = "") -> str:
    "`text` with the machine's paths written as on any machine (`path_replacements`): for a committed result file."
    for old, new in path_replacements(repo_as): text = text.replace(old, new)
    return text
