"""What BM25 and the embedder read for an archival component — its own title + text, or breadcrumb + title + text —
measured on held-out synthetic queries of the ArcLight EAD fixtures, and checked not to change CISI.

    python bench/bench_text_view.py [--generate | --generate-only] [--skip-cisi] [--threads 2]

1. Loads every EAD fixture under `archivesrag/data/archives/ead/` with `load_corpus`: all its passages are the
   corpus searched (the 405 label-only components of the "large components list" fixture stay in as distractors).
2. Samples the components a query writer may read (open today, `queries.shareable`) whose title is more than a bare
   label and number ("File 27", "Item AA006": the large-list fixture's made-up components, with no text to ask about).
3. Writes one synthetic query per sampled component with the package's query generator (`generate_queries`, the
   local SmolLM2 backend, its few-shot prompt), twice:
   - `text_view_queries.jsonl`: the generator reads the component's `text`, as `archivesrag gen-query` does;
   - `text_view_queries_context.jsonl`: the generator reads the component's breadcrumb view (ancestors' titles,
     title, text), so a query may name the collection or series, as a researcher's often does.
   Both files are kept under bench/results/ and reused as they are (pass --generate to complete them): generation
   ran once, for 107 minutes on a busy shared 2-core machine (0.06 and 0.02 passages/s).
4. Splits each query set in halves, whole documents at a time (`evaluation.tuning_half`, seed 42): validation, test.
5. Chooses the view on the validation half with `evaluation.choose_text_view` (base MiniLM, hybrid nDCG@10, the
   fusion weight tuned on the same half for each view), then scores bm25, dense and hybrid in both views on both
   halves, with a 95% bootstrap interval of each mean and a paired interval of breadcrumb − own.
6. CISI (`../shared/datasets/cisi`, if present): no breadcrumbs, so the view must be `own`, the passage texts must
   equal title + newline + text as before, and the committed split's test-half figures are reported.

Writes bench/results/text_view.json and bench/results/text_view.md.
"""
import argparse
import json
import re
import time
from pathlib import Path

from common import go_offline, scrub_paths

go_offline()  # the bundled models only

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EAD = ROOT / "archivesrag" / "data" / "archives" / "ead"
QUERY_FILES = {"component text": RESULTS / "text_view_queries.jsonl",
               "breadcrumb view": RESULTS / "text_view_queries_context.jsonl"}
LABEL_ONLY = re.compile(r"^(file|item|box|folder)\s+[a-z]*\d+$", re.I)
SEED = 42


def load_ead():
    from archivesrag.corpus import load_corpus
    return load_corpus(EAD, verbose=False)


def sample_components(corpus) -> list[dict]:
    "The components a query writer may read whose title is more than a bare label and number."
    from archivesrag.queries import shareable
    keep, _ = shareable([r for r in corpus if not LABEL_ONLY.match((r["title"] or "").strip())])
    return keep


def generate(corpus, threads: int, force: bool = False) -> dict:
    "Write the query files that are missing (`force`: complete both, retrying failures); returns the summaries."
    from archivesrag.llm import LocalLLM
    from archivesrag.queries import generate_queries
    from archivesrag.retrieval import passage_text
    sample = sample_components(corpus)
    shown = {"component text": sample,
             "breadcrumb view": [{**r, "text": passage_text(r, "breadcrumb")} for r in sample]}
    todo = {name: p for name, p in shown.items() if force or not QUERY_FILES[name].exists()}
    if not todo: return {name: {"reused": str(QUERY_FILES[name].relative_to(ROOT)), "passages": len(sample)} for name in shown}
    llm, out = LocalLLM(n_threads=threads), {}
    for name, passages in todo.items():  # resumable: a rerun completes the file, and retries its failures
        out[name] = generate_queries(passages, QUERY_FILES[name], llm=llm, progress=False)
    return out


def mean_interval(values, level: float = 0.95, seed: int = 0) -> dict:
    "Mean of per-query scores with a percentile bootstrap interval (scipy, as `metrics.paired_bootstrap`)."
    import numpy as np
    from scipy.stats import bootstrap
    v = np.asarray(values, dtype=np.float64)
    res = bootstrap((v,), np.mean, n_resamples=10_000, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return {"mean": round(float(v.mean()), 4), "low": round(float(res.confidence_interval.low), 4),
            "high": round(float(res.confidence_interval.high), 4)}


def measure(corpus, records: list[dict], label: str) -> dict:
    "Choose the view on the validation half; score bm25, dense and hybrid in both views on both halves."
    from archivesrag.evaluation import (choose_text_view, evaluate_runs, paired_bootstrap, queries_from_records, to_run,
                                        tune_fusion_weight, tuning_half, visible_corpus)
    from archivesrag.retrieval import TEXT_VIEWS, Retriever, passage_texts
    served, hidden = visible_corpus(corpus)  # what a public search serves (and evaluation scores)
    queries, qrels, report = queries_from_records(records, served, label)
    doc_of = dict(zip(map(str, served["id"]), map(str, served["doc_id"])))
    val = tuning_half(qrels, {q: doc_of[next(iter(j))] for q, j in qrels.items()}, seed=SEED)
    halves = {"validation": val, "test": sorted(set(qrels) - set(val))}
    view, why = choose_text_view(served, None, queries, qrels, qids=val, source=f"validation half, queries from the {label}")
    ids, qids = [str(i) for i in served["id"]], list(qrels)
    runs, weights = {}, {}
    for v in TEXT_VIEWS:  # the Retriever search serves, over the passages read in view v (BM25 and MiniLM alike)
        r = Retriever.build(passage_texts(served, v), None)
        rk = r.rank([queries[q] for q in qids], 100)
        weights[v] = tune_fusion_weight(r, rk, {q: qrels[q] for q in val}, qids, ids)[0]
        for system in ("bm25", "dense", "hybrid"):
            runs[f"{v}/{system}"] = to_run(r.select(rk, 100, system, weight=weights[v]), ids, qids)
    out = {"queries": len(qrels), "queries_report": report, "hidden_by_access": hidden, "passages": len(served),
           "halves": {h: len(q) for h, q in halves.items()}, "chosen": view, "choice": why,
           "fusion_weight": weights, "results": {}}
    for half, qs in halves.items():
        res = evaluate_runs({q: qrels[q] for q in qs}, runs, ["ndcg@10", "recall@10", "mrr@10"])
        pq = res["per_query"]
        rows = {name: {**vals, "ndcg@10_interval": mean_interval([pq[q][name] for q in qs])}
                for name, vals in res["systems"].items()}
        diffs = {s: {k: v for k, v in paired_bootstrap(pq, f"breadcrumb/{s}", f"own/{s}").items() if k not in ("a", "b")}
                 for s in ("bm25", "dense", "hybrid")}
        out["results"][half] = {"systems": rows, "breadcrumb_minus_own": diffs}
    # the choice is the validation half's hybrid rows: the same rankings, the same numbers
    for v in TEXT_VIEWS:
        assert abs(out["results"]["validation"]["systems"][f"{v}/hybrid"]["ndcg@10"] - why["scores"][v]) < 1e-3, v
    return out


def cisi_check() -> dict:
    "CISI has no breadcrumbs: the view must be own, the texts title + newline + text, the figures those committed."
    from archivesrag.corpus import corpus_fingerprint
    from archivesrag.evaluation import choose_text_view, evaluate, find_cisi, load_glasgow
    from archivesrag.retrieval import has_breadcrumbs, passage_texts
    folder = find_cisi()
    if folder is None: return {"skipped": "CISI not found (../shared/datasets/cisi or $ARCHIVESRAG_CISI)"}
    corpus, queries, qrels = load_glasgow(folder)
    before = ["\n".join(str(x) for x in (t, w) if x) for t, w in zip(corpus["title"], corpus["text"])]
    view, why = choose_text_view(corpus, None, queries, qrels)
    assert (view, has_breadcrumbs(corpus)) == ("own", False)
    assert passage_texts(corpus, "own") == passage_texts(corpus, "breadcrumb") == before
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate(collection=f"cisi:{folder}", split_file=HERE / "cisi_query_split.json", output_dir=tmp,
                       plots=False, verbose=False)
    committed = json.loads((RESULTS / "cisi" / "bench.json").read_text())["test"]["systems"]
    same = {s: {"now": res["systems"][s]["ndcg@10"], "committed": committed[s]["ndcg@10"]}
            for s in ("BM25", "base", "base+BM25") if s in committed}
    return {"text_view": res["text_view"], "text_view_from": res["text_view_from"], "choose_text_view": [view, why],
            "texts_fingerprint": corpus_fingerprint(before), "texts_unchanged": True, "n_test_queries": res["n_queries"],
            "fusion_weight": res["fusion_weight"], "ndcg@10_test_half": same,
            "unchanged": all(abs(v["now"] - v["committed"]) < 1e-4 for v in same.values())}


def fmt(i: dict) -> str:
    return f"{i['mean']:.3f} [{i['low']:.3f}, {i['high']:.3f}]"


def markdown(data: dict) -> str:
    from archivesrag.evaluation import text_view_line
    lines = ["# Text views on the EAD fixtures: own (title + text) or breadcrumb + title + text", "",
             "Written by `python bench/bench_text_view.py`; figures from `text_view.json`. nDCG@10 with a 95% "
             "bootstrap interval of the mean; Δ = breadcrumb − own on the same queries, with a paired 95% interval. "
             "Base MiniLM (bundled), BM25 (bm25s), hybrid = min-max weighted sum at the weight tuned on the validation "
             "half for each view. The corpus searched is every passage of the fixtures the public may see today "
             f"({next(iter(data['query_sets'].values()))['passages']} of {data['corpus']['passages']}); the queries "
             f"come from {data['corpus']['sampled']} sampled components (SmolLM2-135M, the package's generator, "
             "one query each; filtered or failed replies leave a component without one).", ""]
    for label, m in data["query_sets"].items():
        lines += [f"## Queries written from the {label}", "",
                  f"{m['queries']} queries: {m['halves']['validation']} validation, {m['halves']['test']} test "
                  f"(halves by document, seed {SEED}); fusion weights (dense) tuned on validation: "
                  + ", ".join(f"{v} {w}" for v, w in m["fusion_weight"].items()) + ".", "",
                  f"Choice on validation: {text_view_line(m['chosen'], m['choice'])}", "",
                  "| half | system | own | breadcrumb | Δ breadcrumb − own |", "|---|---|---|---|---|"]
        for half, r in m["results"].items():
            for s in ("bm25", "dense", "hybrid"):
                d = r["breadcrumb_minus_own"][s]
                lines.append(f"| {half} | {s} | {fmt(r['systems'][f'own/{s}']['ndcg@10_interval'])} | "
                             f"{fmt(r['systems'][f'breadcrumb/{s}']['ndcg@10_interval'])} | "
                             f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
        lines.append("")
    c = data.get("cisi", {})
    lines += ["## CISI (no breadcrumbs)", ""]
    if "skipped" in c: lines.append(c["skipped"])
    else:
        lines += [f"View: {c['text_view']} ({c['text_view_from']}); passage texts identical to title + newline + text "
                  f"in both views (fingerprint {c['texts_fingerprint']}). Test half ({c['n_test_queries']} queries, "
                  "bench/cisi_query_split.json), nDCG@10 now vs bench/results/cisi/bench.json:", "",
                  "| system | now | committed |", "|---|---|---|"]
        lines += [f"| {s} | {v['now']:.4f} | {v['committed']:.4f} |" for s, v in c["ndcg@10_test_half"].items()]
        lines += ["", f"Unchanged: {c['unchanged']}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate-only", action="store_true", help="write the query files and stop")
    ap.add_argument("--generate", action="store_true",
                    help="complete the query files even if they exist (retries the passages that failed); by default "
                         "existing files are reused as they are, so the figures can be reproduced")
    ap.add_argument("--skip-cisi", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads for query generation")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    corpus = load_ead()
    t0 = time.time()
    summaries = generate(corpus, args.threads, args.generate or args.generate_only)
    print(f"queries ready in {time.time() - t0:.0f} s")
    if args.generate_only: return
    from archivesrag.corpus import read_jsonl
    data = {"corpus": {"fixtures": str(EAD.relative_to(ROOT)), "passages": len(corpus),
                       "sampled": len(sample_components(corpus))},
            "generation": {k: {m: v[m] for m in ("passages", "done", "skipped", "failed", "filtered", "llm", "reused",
                                                 "passages_per_s") if m in v} for k, v in summaries.items()},
            "query_sets": {}}
    for label, f in QUERY_FILES.items():
        data["query_sets"][label] = measure(corpus, read_jsonl(f), label)
        print(label, json.dumps({h: {s: r["systems"][s]["ndcg@10"] for s in r["systems"]}
                                 for h, r in data["query_sets"][label]["results"].items()}))
    data["cisi"] = {"skipped": "--skip-cisi"} if args.skip_cisi else cisi_check()
    from archivesrag.core import write_atomic
    write_atomic(RESULTS / "text_view.json", scrub_paths(json.dumps(data, indent=1)))  # no machine paths in a committed file
    write_atomic(RESULTS / "text_view.md", scrub_paths(markdown(data)))
    print((RESULTS / "text_view.md").read_text())


if __name__ == "__main__":
    main()
