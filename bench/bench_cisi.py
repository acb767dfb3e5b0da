"""Benchmark the offline recipe on CISI, a human-judged test collection, and time every stage.

    python bench/bench_cisi.py [--cisi ../shared/datasets/cisi] [--out bench/results/cisi] [--num_train_epochs 3]

The pipeline sees only CISI's 1,460 documents: the local LLM writes one query per document, MiniLM mines hard
negatives, MiniLM is fine-tuned on them. Then BM25, the base and the fine-tuned model (and their fusions) are
scored on CISI's 76 human-judged queries, which no step has seen. Every stage runs in a fresh process so its peak
memory is its own. Stages whose outputs exist are reused (delete --out to start over). Prints tables and writes
`<out>/bench.json`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_corpus(a):
    from archivesrag.corpus import save_corpus
    from archivesrag.evaluation import load_glasgow
    corpus, queries, qrels = load_glasgow(a.cisi)
    corpus = corpus.map(lambda r: {"doc_id": r["id"]})
    save_corpus(corpus, Path(a.out) / "corpus.jsonl")
    return {"documents": len(corpus), "judged_queries": len(qrels)}


def stage_queries(a):
    from archivesrag.llm import get_llm
    from archivesrag.queries import generate_queries
    out = Path(a.out)
    before = sum(1 for _ in open(out / "queries.jsonl")) if (out / "queries.jsonl").exists() else 0
    t0 = time.perf_counter()
    from archivesrag.corpus import load_corpus
    docs = load_corpus(out / "corpus.jsonl", max_tokens=None, verbose=False)  # whole documents: CISI is judged per document
    summary = generate_queries(docs, out / "queries.jsonl", llm=get_llm("local"),
                               failures_file=out / "failures.jsonl", limit=a.limit)
    dt = time.perf_counter() - t0
    new = sum(1 for _ in open(out / "queries.jsonl")) - before
    return {"summary": summary, "new_queries": new, "seconds_generating": round(dt, 1),
            "passages_per_s": round(summary.get("attempted", new) / dt, 3) if new else None}


def stage_mine(a):
    from archivesrag.negatives import mine_hard_negatives
    out = Path(a.out)
    return mine_hard_negatives(out / "queries.jsonl", out / "minedHN.jsonl", model_name_or_path="minilm",
                               range_for_sampling="2-200", negative_number=15, candidate_pool=out / "corpus.jsonl",
                               seed=a.seed, cache_dir=out / "cache")


def stage_train(a):
    from archivesrag.training import train
    out = Path(a.out)
    model = out / "model"
    t0 = time.perf_counter()
    train(out / "minedHN.jsonl", model, model_name_or_path="minilm", learning_rate=a.learning_rate,
          num_train_epochs=a.num_train_epochs, per_device_train_batch_size=32, temperature=a.temperature,
          query_max_len=64, passage_max_len=256, train_group_size=a.train_group_size, logging_steps=5, save_steps=100000,
          seed=a.seed)
    dt = time.perf_counter() - t0
    n = sum(1 for _ in open(out / "minedHN.jsonl"))
    return {"examples": n, "epochs": a.num_train_epochs, "seconds": round(dt, 1),
            "train_samples_per_s": round(n * a.num_train_epochs / dt, 2)}


def stage_evaluate(a):
    from archivesrag.evaluation import evaluate
    out = Path(a.out)
    res = evaluate(model_name_or_path=out / "model", collection=f"cisi:{a.cisi}", output_dir=out / "eval",
                   cache_dir=out / "cache", verbose=False)
    return {"systems": res["systems"], "n_queries": res["n_queries"], "fusion": res.get("fusion", {}),
            "n_tune_queries": res.get("n_tune_queries")}


def stage_encoding(a):
    "Docs/s: the pipeline's cached encoder (cold cache) vs a bare SentenceTransformer.encode of the same texts."
    import tempfile
    from archivesrag.corpus import read_jsonl
    from archivesrag.models import load_embedder, resolve_embedder
    from archivesrag.negatives import encode_cached
    texts = [r["text"] for r in read_jsonl(Path(a.out) / "corpus.jsonl")]
    model = load_embedder("minilm")
    model.encode(texts[:64])  # warm-up
    t0 = time.perf_counter(); model.encode(texts, batch_size=64, normalize_embeddings=True); bare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter(); encode_cached(resolve_embedder("minilm"), texts, cache_dir=tmp); cold = time.perf_counter() - t0
        t0 = time.perf_counter(); encode_cached(resolve_embedder("minilm"), texts, cache_dir=tmp); warm = time.perf_counter() - t0
    return {"texts": len(texts), "bare_docs_per_s": round(len(texts) / bare, 1),
            "pipeline_docs_per_s": round(len(texts) / cold, 1), "pipeline_over_bare_time": round(cold / bare, 3),
            "cached_rerun_s": round(warm, 3)}


def stage_search(a):
    "Search latency on CISI's queries with the fine-tuned model: ms/query without and with query encoding."
    from archivesrag.evaluation import load_glasgow
    from archivesrag.search import SearchIndex
    out = Path(a.out)
    _, queries, qrels = load_glasgow(a.cisi)
    qs = [queries[q] for q in qrels]
    t0 = time.perf_counter()
    index = SearchIndex.build(out / "corpus.jsonl", model_name_or_path=str(out / "model"))
    build = time.perf_counter() - t0
    emb = index.encode(qs)
    t0 = time.perf_counter()
    for e in emb: index.dataset.get_nearest_examples("embeddings", e, k=10)
    faiss_only = (time.perf_counter() - t0) / len(qs) * 1000
    res = {}
    for mode in ("dense", "bm25", "hybrid"):
        t0 = time.perf_counter()
        for q in qs: index.search(q, k=10, retrieval=mode)
        res[f"{mode}_ms_per_query"] = round((time.perf_counter() - t0) / len(qs) * 1000, 2)
    return {"index_build_s": round(build, 1), "faiss_ms_per_query_excl_encoding": round(faiss_only, 3), **res}


STAGES = [("corpus", stage_corpus), ("queries", stage_queries), ("mine", stage_mine), ("train", stage_train),
          ("evaluate", stage_evaluate), ("encoding", stage_encoding), ("search", stage_search)]


def _child(fn, a, q):
    t0 = time.perf_counter()
    try: q.put(("ok", fn(a), time.perf_counter() - t0, _peak_mb()))
    except BaseException as e: q.put(("error", f"{type(e).__name__}: {e}", time.perf_counter() - t0, _peak_mb()))


def run_stage(name, fn, a):
    "Run one stage in a fresh process (spawn) so its peak RSS is its own."
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, a, q))
    p.start()
    status, info, secs, peak = q.get()
    p.join()
    if status != "ok": sys.exit(f"stage {name} failed: {info}")
    return {"seconds": round(secs, 1), "peak_rss_mb": round(peak), "result": info}


def main(argv=None):
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cisi", default=os.environ.get("ARCHIVESRAG_CISI", repo.parent / "shared" / "datasets" / "cisi"))
    p.add_argument("--out", default=repo / "bench" / "results" / "cisi")
    p.add_argument("--limit", type=int, help="generate queries for the first N documents only")
    p.add_argument("--num_train_epochs", type=float, default=3)
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--train_group_size", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--stages", default=",".join(n for n, _ in STAGES), help="comma-separated subset to (re)run")
    a = p.parse_args(argv)
    a.cisi, a.out = str(a.cisi), str(a.out)
    if not (Path(a.cisi) / "CISI.ALL").exists(): sys.exit(f"CISI not found in {a.cisi}: pass --cisi DIR")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    results_file = Path(a.out) / "bench.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    wanted = a.stages.split(",")
    for name, fn in STAGES:
        if name not in wanted: continue
        print(f"[{name}] ...", flush=True)
        results[name] = run_stage(name, fn, a)
        results_file.write_text(json.dumps(results, indent=1))
        print(f"[{name}] {results[name]['seconds']} s, peak {results[name]['peak_rss_mb']} MB: "
              f"{json.dumps(results[name]['result'])[:300]}", flush=True)
    report(results)


def report(results):
    if "evaluate" in results:
        systems = results["evaluate"]["result"]["systems"]
        n = results["evaluate"]["result"]["n_queries"]
        bm25, base = systems.get("BM25", {}), systems.get("base", {})
        print(f"\nCISI, {n} human-judged queries (none used in training)")
        print(f"{'system':<28}{'nDCG@10':>9}{'Δ base':>9}{'Δ BM25':>9}{'R@100':>9}{'Δ base':>9}{'Δ BM25':>9}")
        for s, m in systems.items():
            print(f"{s:<28}{m['ndcg@10']:>9.3f}{m['ndcg@10'] - base.get('ndcg@10', 0):>+9.3f}"
                  f"{m['ndcg@10'] - bm25.get('ndcg@10', 0):>+9.3f}{m['recall@100']:>9.3f}"
                  f"{m['recall@100'] - base.get('recall@100', 0):>+9.3f}{m['recall@100'] - bm25.get('recall@100', 0):>+9.3f}")
    print(f"\n{'stage':<10}{'seconds':>9}{'peak MB':>9}  figures")
    for name, r in results.items():
        if not isinstance(r, dict) or "seconds" not in r: continue
        res = r["result"]
        fig = {"queries": lambda: f"{res.get('passages_per_s')} passages/s (local SmolLM2)",
               "train": lambda: f"{res.get('train_samples_per_s')} samples/s",
               "encoding": lambda: f"pipeline {res.get('pipeline_docs_per_s')} docs/s vs bare encode "
                                   f"{res.get('bare_docs_per_s')} docs/s (time ratio {res.get('pipeline_over_bare_time')}), "
                                   f"cached rerun {res.get('cached_rerun_s')} s",
               "search": lambda: f"dense {res.get('dense_ms_per_query')} ms/q incl. encoding, faiss alone "
                                 f"{res.get('faiss_ms_per_query_excl_encoding')} ms/q, hybrid {res.get('hybrid_ms_per_query')} ms/q",
               }.get(name, lambda: "")()
        print(f"{name:<10}{r['seconds']:>9}{r['peak_rss_mb']:>9}  {fig}")


if __name__ == "__main__":
    main()
