"""Query generation throughput on the local backend (llama.cpp in-process, bundled SmolLM2): documents/s with the
prompt's fixed part (instruction + few-shot examples) reused from llama.cpp's KV cache, against the same prompts
evaluated from scratch, in one run, on the same cores and passages; then, optionally, the openai backend against a
local OpenAI-compatible server (`python -m llama_cpp.server`) at concurrency 1 and 4.

    python bench/bench_queries.py [--n 20] [--max_passage_words 80] [--threads N] [--server]
    python bench/bench_queries.py --corpus bench/results/cisi/corpus.jsonl --max_passage_words 0 --threads 2

Each local run also prints where its time goes, from llama.cpp's own timers: reading prompts, writing tokens, and
the rest (grammar-constrained sampling, Python), and so the most that parallel slots, which batch only the writing,
could gain on the same cores.

`build_messages` puts the fixed part first and the passage last, so consecutive prompts share a ~275-token prefix
that llama-cpp-python does not evaluate again ("prefix-match hit"). The "no prefix reuse" row is what a layout with
the passage first costs: we get it by resetting the model state before each prompt, which keeps the prompts, the
seeds and the outputs identical and changes only what is reused. The load average is printed too: on a shared
machine it moves the figures a lot.
"""
import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import llama_cpp

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from archivesrag.corpus import load_corpus, load_sample
from archivesrag.llm import LocalLLM, get_llm
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


class ColdLocalLLM(LocalLLM):
    "The local backend with llama.cpp's state reset before each prompt: nothing of the previous prompt is reused."
    def _chat_one(self, messages, **kw):
        with self._lock: self._llm.reset()
        return super()._chat_one(messages, **kw)


def run(name, passages, llm, tmp, max_passage_words, **kw):
    log = io.StringIO()
    with contextlib.redirect_stderr(log):  # llama-cpp-python's verbose cache messages
        s = generate_queries(passages, Path(tmp) / f"{name.split()[0]}-{time.time_ns()}.jsonl", llm=llm,
                             max_passage_words=max_passage_words, progress=False, verbose=False, **kw)
    hits = log.getvalue().count("prefix-match hit")
    print(f"{name:<30} {s['passages_per_s']:6.3f} documents/s  ({len(passages)} in {s['seconds']:.1f} s; "
          f"{s['done']} done, {s['failed']} failed, {s['filtered']} filtered; "
          f"{s['usage']['prompt_tokens']}+{s['usage']['completion_tokens']} tokens; {hits} prefix-match hits; "
          f"load {os.getloadavg()[0]:.1f})", flush=True)
    return s


class PerfCounter:
    """llama.cpp's own timers, reset before each reply and summed over a run: the time spent reading prompts and
    writing tokens, so the rest is sampling under the JSON grammar and Python."""
    def __init__(self, llm):
        self.read = self.write = 0.0; self.n_read = self.n_write = 0
        inner = llm._chat_one
        def timed(messages, **kw):
            llama_cpp.llama_perf_context_reset(llm._llm._ctx.ctx)
            out = inner(messages, **kw)
            perf = llama_cpp.llama_perf_context(llm._llm._ctx.ctx)
            self.read += perf.t_p_eval_ms / 1000; self.write += perf.t_eval_ms / 1000
            self.n_read += perf.n_p_eval; self.n_write += perf.n_eval
            return out
        llm._chat_one = timed

    def report(self, seconds: float):
        """Parallel slots (continuous batching) batch only the writing of several replies on the same cores: prompts
        are already read in batches, and sampling is per reply. By Amdahl's law, slots can at most speed generation
        up by seconds / (seconds - writing)."""
        other = seconds - self.read - self.write
        print(f"{'  where the time goes':<30} reading prompts {self.read:.1f} s ({self.n_read} tokens, "
              f"{self.n_read / max(self.read, 1e-9):.0f}/s), writing {self.write:.1f} s ({self.n_write} tokens, "
              f"{self.n_write / max(self.write, 1e-9):.0f}/s), sampling and the rest {other:.1f} s, of {seconds:.1f} s: "
              f"parallel slots could give at most {seconds / (seconds - self.write):.2f}x", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="passages per setting [20]")
    p.add_argument("--max_passage_words", type=int, default=80, help="words of each passage shown to the model [80; 0: all]")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="llama.cpp threads")
    p.add_argument("--server", action="store_true", help="also time the openai backend against llama_cpp.server")
    p.add_argument("--corpus", help="a corpus JSONL to take the passages from, e.g. bench/results/cisi/corpus.jsonl "
                                    "[the sample archive]")
    a = p.parse_args()
    a.max_passage_words = a.max_passage_words or None  # 0: whole passages
    ds = load_corpus(a.corpus, max_tokens=None, verbose=False) if a.corpus else load_sample(verbose=False)
    passages = ds.select(range(0, len(ds), max(1, len(ds) // a.n)))[: a.n]
    passages = [dict(zip(passages, v)) for v in zip(*passages.values())]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {len(passages)} passages, "
          f"{a.threads} llama.cpp threads, " + (f"first {a.max_passage_words} words of each passage" if a.max_passage_words else "whole passages"), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for name, cls in [("no prefix reuse (passage first)", ColdLocalLLM), ("prefix first (build_messages)", LocalLLM)]:
            llm = cls(n_threads=a.threads)
            llm._llm.verbose = True  # so that llama-cpp-python reports its prefix-match hits
            perf = PerfCounter(llm)
            s = run(name, passages, llm, tmp, a.max_passage_words)
            rates[name] = s["passages_per_s"]
            perf.report(s["seconds"])
            del llm
        old, new = rates.values()
        print(f"prefix first / no prefix reuse: {new / old:.2f}x documents/s", flush=True)
        if not a.server: return
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
