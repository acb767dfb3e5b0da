"""Are the RAG answers right? Both modes on the capstone questions, scored against references written beforehand.

    python bench/bench_answers.py [--threads 1] [--json out.json] [--index_dir DIR] [--modes extractive,generated]

For each capstone question (`archivesrag.rag.CAPSTONE_REFERENCES`: the demo's two and `SAMPLE_QUESTIONS`), retrieve
the top 3 passages from the bundled sample archive's index (`SearchIndex.build`) and answer in each mode:
`extractive` (the passages' best sentences quoted with their citations; no LLM) and `generated` (the bundled
SmolLM2-135M, llama.cpp, CPU). Each answer is scored with `archivesrag.rag.answer_is_right` (every key fact of the
reference stated, and the passage that answers cited) and, for comparison, with `answer_checks` (non-empty, cites a
retrieved passage, shares words with it: checks of form, not of truth). Prints one line per question and mode, then
the counts side by side. It never asserts: a 135M model's exact text differs between CPUs and thread counts.
"""
import argparse
import json
import os
import sys
import time

from common import go_offline

go_offline()  # the bundled models only
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODES = ("extractive", "generated")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: ARCHIVESRAG_LLM_THREADS or auto)")
    p.add_argument("--json", default=None, help="also write the answers and their scores here")
    p.add_argument("--index_dir", default=None, help="a saved index of the sample archive (default: build one, ~1 min)")
    p.add_argument("--modes", default=",".join(MODES), help="which modes to run, comma-separated (default: both)")
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES): p.error(f"--modes: choose from {', '.join(MODES)}")
    from archivesrag.corpus import load_sample
    from archivesrag.rag import CAPSTONE_REFERENCES, answer, answer_checks, answer_is_right
    from archivesrag.core import markdown_table
    from archivesrag.search import SearchIndex

    index = SearchIndex.load(a.index_dir) if a.index_dir else SearchIndex.build(load_sample(verbose=False))
    llm = None
    if "generated" in modes:
        from archivesrag.llm import get_llm
        llm = get_llm("local", **({"n_threads": a.threads} if a.threads else {}))
    rows, seconds = [], dict.fromkeys(modes, 0.0)
    for ref in CAPSTONE_REFERENCES:
        q = ref["question"]
        print(f"- {q}  (reference: {ref['doc_id']})", flush=True)
        for mode in modes:
            t0 = time.time()
            res = answer(q, index, llm=llm if mode == "generated" else None, k=3, mode=mode)
            seconds[mode] += time.time() - t0
            right = answer_is_right(res, ref)
            checks = answer_checks(res["answer"], res.get("results") or [], q)
            rows.append({"question": q, "mode": mode, "answer": res["answer"], "error": res.get("error"),
                         "passages": res["passages"], **right, "all_three": checks["all_three"],
                         "completion_tokens": res.get("completion_tokens", 0)})
            print(f"  {mode:10} right={'yes' if right['right'] else 'no'} cites_reference="
                  f"{'yes' if right['cites_reference'] else 'no'} missed={right['missed'] or '-'}  "
                  f"answer_checks={'pass' if checks['all_three'] else 'fail'}\n  {'':10} > {res['text'][:300]!r}", flush=True)
    n = len(CAPSTONE_REFERENCES)
    count = lambda mode, key: sum(bool(r[key]) for r in rows if r["mode"] == mode)
    counts = {m: {"right": count(m, "right"), "cites_reference": count(m, "cites_reference"),
                  "all_facts": sum(not r["missed"] for r in rows if r["mode"] == m),
                  "answer_checks_all_three": count(m, "all_three")} for m in modes}
    table = [{"of " + str(n): label, **{m: f"{counts[m][key]}/{n}" for m in modes}}
             for key, label in [("right", "right (facts + citation)"), ("all_facts", "every key fact stated"),
                                ("cites_reference", "cites the passage that answers"),
                                ("answer_checks_all_three", "passes answer_checks (form)")]]
    table.append({"of " + str(n): "seconds", **{m: f"{seconds[m]:.0f}" for m in modes}})
    model = index.manifest["model"].rstrip("/")
    model = os.path.basename(os.path.dirname(model)) if model.endswith("/model") else os.path.basename(model)
    print(f"\n{llm.name if llm else 'no LLM'}; embedder {model}, {len(index)} passages, k=3\n")
    print(markdown_table(table, first="of " + str(n)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"llm": llm.name if llm else None, "counts": counts, "n": n, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
