"""How usable are the local model's RAG answers? `answer_checks` over the demo's questions and a few more.

    python bench/bench_answers.py [--threads 1] [--json out.json]

For each question: retrieve from the bundled sample archive's index (`SearchIndex.build`), answer with the bundled
SmolLM2-135M (llama.cpp, CPU), and check the answer with `archivesrag.rag.answer_checks`: non-empty, cites a
retrieved passage id, shares content words with the passage it cites. Prints one line per question and the counts.
It never asserts on an answer's wording: a 135M model's exact text differs between CPUs and thread counts.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: ARCHIVESRAG_LLM_THREADS or auto)")
    p.add_argument("--json", default=None, help="also write the answers and checks here")
    p.add_argument("--index_dir", default=None, help="a saved index of the sample archive (default: build one, ~1 min)")
    a = p.parse_args(argv)
    from archivesrag.corpus import load_sample
    from archivesrag.llm import get_llm
    from archivesrag.pipeline import DEMO_QUESTIONS
    from archivesrag.rag import SAMPLE_QUESTIONS, answer, answer_checks
    from archivesrag.search import SearchIndex

    index = SearchIndex.load(a.index_dir) if a.index_dir else SearchIndex.build(load_sample(verbose=False))
    llm = get_llm("local", **({"n_threads": a.threads} if a.threads else {}))
    rows, t0 = [], time.time()
    for q in list(DEMO_QUESTIONS) + SAMPLE_QUESTIONS:
        res = answer(q, index, llm=llm, k=3)
        checks = answer_checks(res["answer"], res.get("results") or [], q)
        rows.append({"question": q, "answer": res["answer"], "error": res.get("error"), **checks,
                     "completion_tokens": res.get("completion_tokens", 0)})
        flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in checks.items() if isinstance(v, bool))
        print(f"- {q}\n  {flags}  ({res.get('completion_tokens', 0)} tokens)\n  > {res['answer'][:400]!r}", flush=True)
    n = len(rows)
    counts = {k: sum(bool(r[k]) for r in rows) for k in ("non_empty", "cites_retrieved", "overlaps_cited", "all_three")}
    print(f"\n{llm.name}, {n} questions, {time.time() - t0:.0f} s: " + ", ".join(f"{k} {v}/{n}" for k, v in counts.items()))
    if a.json:
        with open(a.json, "w") as f: json.dump({"llm": llm.name, "counts": counts, "n": n, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
