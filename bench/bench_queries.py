"""Query generation throughput: passages/second for the local backend (llama.cpp in-process) and for the openai
backend against a local OpenAI-compatible server (`python -m llama_cpp.server`, bundled SmolLM2) at concurrency 1 and 4.

    python bench/bench_queries.py [--n 8] [--max_passage_words 80] [--threads N]

Prints one line per setting. The load average is printed too: on a shared machine it moves the figures a lot.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from archivesrag.corpus import load_sample
from archivesrag.llm import get_llm
from archivesrag.models import bundled_gguf_path
from archivesrag.queries import FEW_SHOT_EXAMPLES, FEW_SHOT_PROMPT, generate_queries


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int, log: Path):
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--model_alias", "smollm2"]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        if proc.poll() is not None: raise RuntimeError(log.read_text()[-2000:])
        try:
            urllib.request.urlopen(base + "/models", timeout=2); return proc, base
        except OSError: time.sleep(0.5)
    proc.kill(); raise RuntimeError("llama_cpp.server did not start")


def run(name, passages, llm, tmp, max_passage_words, **kw):
    s = generate_queries(passages, Path(tmp) / f"{name}.jsonl", llm=llm, max_passage_words=max_passage_words,
                         progress=False, verbose=False, **kw)
    print(f"{name:<28} {s['passages_per_s']:6.3f} passages/s  ({len(passages)} passages in {s['seconds']:.1f} s; "
          f"{s['done']} done, {s['failed']} failed, {s['filtered']} filtered; "
          f"{s['usage']['prompt_tokens']}+{s['usage']['completion_tokens']} tokens; load {os.getloadavg()[0]:.1f})",
          flush=True)
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="passages per setting [8]")
    p.add_argument("--max_passage_words", type=int, default=80, help="words of each passage shown to the model [80]")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="llama.cpp threads")
    p.add_argument("--skip_local", action="store_true")
    a = p.parse_args()
    ds = load_sample(verbose=False)
    passages = ds.select(range(0, len(ds), max(1, len(ds) // a.n)))[: a.n]
    passages = [dict(zip(passages, v)) for v in zip(*passages.values())]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {len(passages)} passages, "
          f"{a.threads} llama.cpp threads, first {a.max_passage_words} words of each passage", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_local:
            run("local (in-process)", passages, get_llm("local", n_threads=a.threads), tmp, a.max_passage_words)
        proc, base = start_server(a.threads, Path(tmp) / "server.log")
        try:
            for c in (1, 4):
                llm = get_llm("openai", model="smollm2", base_url=base, concurrency=c)
                run(f"openai -> llama server, c={c}", passages, llm, tmp, a.max_passage_words,
                    prompt=FEW_SHOT_PROMPT, examples=FEW_SHOT_EXAMPLES)
        finally:
            proc.terminate(); proc.wait(10)


if __name__ == "__main__":
    main()
