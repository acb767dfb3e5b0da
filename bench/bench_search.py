"""Search benchmark: single-query latency of dense, BM25 and hybrid retrieval as `archivesrag search` serves it.

    python bench/bench_search.py [--corpus cisi|sample] [--model_name_or_path PATH] [--n_queries 100] [--repeat 3]
                                 [--factories "Flat;HNSW32;IVF16,Flat"]

One query at a time, median of `--repeat` passes over the queries, in ms per query. The corpus is CISI's 1,460
abstracts (`../shared/datasets/cisi`, or $ARCHIVESRAG_CISI) with its 112 queries when found, else the sample archive
with its bundled queries. Rows:

- `SearchIndex.search` for dense, bm25 and hybrid: what a user waits for (query encoding, faiss, BM25, fusion,
  reading the k passages). Every mode computes both rankings, because every result shows both ranks;
- the parts: query encoding alone, faiss alone, BM25 alone, the numpy fusion alone, and a dense-only `Retriever`
  (no BM25 at all), so "hybrid − dense" can be read both ways.

The figure the course promises: hybrid adds at most ~5 ms over dense at this size (the ranx fusion it replaced
cost ~150 ms per call). `--factories` adds recall@10 against Flat and faiss latency for approximate indexes.
"""
import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def _corpus(which: str):
    "(passages Dataset, queries list, label)"
    from archivesrag.evaluation import find_cisi, load_glasgow
    if which in ("cisi", "auto") and find_cisi():
        corpus, queries, _ = load_glasgow(find_cisi())
        return corpus, list(queries.values()), "CISI"
    if which == "cisi": raise SystemExit("CISI not found: put it in ../shared/datasets/cisi or set ARCHIVESRAG_CISI")
    from archivesrag.corpus import load_sample
    from archivesrag.queries import load_sample_queries
    return load_sample(verbose=False), [q["query"] for q in load_sample_queries()], "sample archive"


def per_query(fn, queries, repeat):
    "Median over `repeat` passes of the mean ms per query, one query at a time."
    passes = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i, q in enumerate(queries): fn(i, q)
        passes.append((time.perf_counter() - t0) * 1000 / len(queries))
    return statistics.median(passes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="auto", choices=["auto", "cisi", "sample"])
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--n_queries", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3, help="timed passes over the queries (the median is reported)")
    p.add_argument("--factories", default="Flat", help="faiss factory strings separated by ';' (Flat first)")
    a = p.parse_args(argv)
    import faiss
    import torch
    from archivesrag.retrieval import Retriever, bm25_search, fuse
    from archivesrag.search import SearchIndex

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, faiss {faiss.__version__}, GPUs for faiss: {faiss.get_num_gpus()}")
    corpus, queries, label = _corpus(a.corpus)
    queries = queries[:a.n_queries]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ARCHIVESRAG_CACHE"] = cache  # a cold build: embedding included
        t0 = time.perf_counter()
        index = SearchIndex.build(corpus, model_name_or_path=a.model_name_or_path)
        t_build = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter(); index.save(d); t_save = time.perf_counter() - t0
            t0 = time.perf_counter(); SearchIndex.load(d); t_load = time.perf_counter() - t0
    print(f"{label}: {len(index)} passages, {len(queries)} queries; build (embed title+text, faiss Flat, BM25) "
          f"{t_build:.1f} s, save {t_save * 1000:.0f} ms, reload {t_load * 1000:.0f} ms; model {index.manifest['model']}; "
          f"fusion weight {index.manifest['fusion_weight']}")

    r = index.retriever
    index.search(queries[:2], k=10)  # warm-up: model loaded, numba/bm25s compiled
    qv = index.encode(queries)
    rk = r.rank(queries, 100, qvecs=qv)
    one = lambda part, i: (part[0][i:i + 1], part[1][i:i + 1])
    dense_only = Retriever(index.faiss_index, None, model=index.manifest["model"])
    ms = {
        "encode one query": per_query(lambda i, q: index.encode([q]), queries, a.repeat),
        "faiss search (top 100)": per_query(lambda i, q: index.faiss_index.search(qv[i:i + 1], 100), queries, a.repeat),
        "BM25 search (top 100)": per_query(lambda i, q: bm25_search(index.bm25, [q], 100), queries, a.repeat),
        "numpy fusion": per_query(lambda i, q: fuse(one(rk.dense, i), one(rk.lexical, i), 0.3), queries, a.repeat),
        "Retriever, dense only (no BM25)": per_query(lambda i, q: dense_only.search(q, 10, "dense"), queries, a.repeat),
    }
    for mode in ("dense", "bm25", "hybrid"):
        ms[f"SearchIndex.search {mode}"] = per_query(lambda i, q: index.search(q, k=10, retrieval=mode), queries, a.repeat)
    width = max(map(len, ms))
    print(f"\n{'ms per query (one at a time)':<{width}}  {'ms':>8}")
    for name, v in ms.items(): print(f"{name:<{width}}  {v:>8.3f}")
    d, h, pure = ms["SearchIndex.search dense"], ms["SearchIndex.search hybrid"], ms["Retriever, dense only (no BM25)"]
    print(f"\nhybrid / dense = {h / d:.3f} ({h - d:+.2f} ms); hybrid / dense without BM25 = {h / pure:.3f} "
          f"({h - pure:+.2f} ms: BM25 + fusion + reading the ranks)")

    factories = [f.strip() for f in a.factories.split(";") if f.strip()]
    if factories != ["Flat"]:
        from archivesrag.search import compare_index_types
        emb = np.asarray(index.dataset["embeddings"], dtype=np.float32)
        for row in compare_index_types(emb, qv, factories, k=10): print(row)


if __name__ == "__main__":
    main()
