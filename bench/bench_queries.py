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
import tempfile
import time
from pathlib import Path

import llama_cpp
from common import go_offline, llama_server

go_offline()

from archivesrag.corpus import load_corpus, load_sample  # noqa: E402
from archivesrag.llm import LocalLLM, get_llm  # noqa: E402
from archivesrag.queries import FEW_SHOT_EXAMPLES, FEW_SHOT_PROMPT, generate_queries  # noqa: E402


class TimedLocalLLM(LocalLLM):
    """The local backend asked one conversation at a time (through the public `chat`), with llama.cpp's own timers
    reset before each reply and summed over the run: the time spent reading prompts and writing tokens, so the rest
    is sampling under the JSON grammar and Python. `cold`: the model's state is reset before each prompt too, so
    nothing of the previous prompt is reused."""
    def __init__(self, *args, cold: bool = False, **kw):
        super().__init__(*args, **kw)
        self.cold, self.read, self.write, self.n_read, self.n_write = cold, 0.0, 0.0, 0, 0

    def chat(self, conversations, **kw):
        llama, replies = self.llama, []
        for conv in conversations:
            if self.cold: llama.reset()
            llama_cpp.llama_perf_context_reset(llama.ctx)
            replies += super().chat([conv], **kw)
            perf = llama_cpp.llama_perf_context(llama.ctx)
            self.read += perf.t_p_eval_ms / 1000; self.write += perf.t_eval_ms / 1000
            self.n_read += perf.n_p_eval; self.n_write += perf.n_eval
        return replies

    def report(self, seconds: float):
        """Parallel slots (continuous batching) batch only the writing of several replies on the same cores: prompts
        are already read in batches, and sampling is per reply. By Amdahl's law, slots can at most speed generation
        up by seconds / (seconds - writing)."""
        other = seconds - self.read - self.write
        print(f"{'  where the time goes':<30} reading prompts {self.read:.1f} s ({self.n_read} tokens, "
              f"{self.n_read / max(self.read, 1e-9):.0f}/s), writing {self.write:.1f} s ({self.n_write} tokens, "
              f"{self.n_write / max(self.write, 1e-9):.0f}/s), sampling and the rest {other:.1f} s, of {seconds:.1f} s: "
              f"parallel slots could give at most {seconds / (seconds - self.write):.2f}x", flush=True)


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
        for name, cold in [("no prefix reuse (passage first)", True), ("prefix first (build_messages)", False)]:
            llm = TimedLocalLLM(n_threads=a.threads, cold=cold)
            llm.llama.verbose = True  # so that llama-cpp-python reports its prefix-match hits
            s = run(name, passages, llm, tmp, a.max_passage_words)
            rates[name] = s["passages_per_s"]
            llm.report(s["seconds"])
            del llm
        old, new = rates.values()
        print(f"prefix first / no prefix reuse: {new / old:.2f}x documents/s", flush=True)
        if not a.server: return
        with llama_server(Path(tmp) / "server.log", threads=a.threads, wait_s=120) as base:
            for c in (1, 4):
                llm = get_llm("openai", model="smollm2", base_url=base, concurrency=c)
                run(f"openai -> llama server, c={c}", passages, llm, tmp, a.max_passage_words,
                    prompt=FEW_SHOT_PROMPT, examples=FEW_SHOT_EXAMPLES)


if __name__ == "__main__":
    main()
