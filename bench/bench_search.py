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

import numpy as np
from common import go_offline

go_offline()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _corpus(which: str):
    "(passages Dataset, queries list, label)"
    from archivesrag.glasgow import find_cisi, load_glasgow
    if which in ("cisi", "auto") and find_cisi():
        corpus, queries, _ = load_glasgow(find_cisi())
        return corpus, list(queries.values()), "CISI"
    if which == "cisi": raise SystemExit("CISI not found: put it in ../shared/datasets/cisi or set ARCHIVESRAG_CISI")
    from archivesrag.corpus import load_sample
    from archivesrag.queries import load_sample_queries
    return load_sample(verbose=False), [q["query"] for q in load_sample_queries()], "sample archive"


def paired(fns: dict, queries, repeat: int) -> dict[str, list[float]]:
    """ms of every call, one query at a time: each query runs every function in turn (order alternating), so a busy,
    shared CPU slows all of them alike and per-query differences stay meaningful."""
    times = {n: [] for n in fns}
    for _ in range(repeat):
        for i, q in enumerate(queries):
            for n in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter(); fns[n](i, q); times[n].append((time.perf_counter() - t0) * 1000)
    return times


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
    t0 = time.perf_counter()
    index = SearchIndex.build(corpus, model_name_or_path=a.model_name_or_path)  # embeddings from the cache when warm
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter(); index.save(d); t_save = time.perf_counter() - t0
        t0 = time.perf_counter(); SearchIndex.load(d); t_load = time.perf_counter() - t0
    print(f"{label}: {len(index)} passages, {len(queries)} queries; build (embed title+text or read the cache, faiss Flat, BM25) "
          f"{t_build:.1f} s, save {t_save * 1000:.0f} ms, reload {t_load * 1000:.0f} ms; model {index.manifest['model']}; "
          f"fusion weight {index.manifest['fusion_weight']}")

    r = index.retriever
    index.search(queries[:2], k=10)  # warm-up: model loaded, numba/bm25s compiled
    qv = index.encode(queries)
    rk = r.rank(queries, 100, qvecs=qv)
    one = lambda part, i: (part[0][i:i + 1], part[1][i:i + 1])
    dense_only = Retriever(index.faiss_index, None, model=index.manifest["model"])

    def served(i, q, mode, ret=r):
        "What `search` serves once the query is encoded: the index's own call, or a bare retriever's rank and select."
        if ret is r: return index.search(q, k=10, retrieval=mode, query_vectors=qv[i:i + 1])
        return ret.select(ret.rank([q], 100, qvecs=qv[i:i + 1]), 10, mode)
    t = paired({
        "encode one query": lambda i, q: index.encode([q]),
        "faiss search (top 100)": lambda i, q: index.faiss_index.search(qv[i:i + 1], 100),
        "BM25 search (top 100)": lambda i, q: bm25_search(index.bm25, [q], 100),
        "numpy fusion": lambda i, q: fuse(one(rk.dense, i), one(rk.lexical, i), 0.3),
        "Retriever, dense only (no BM25)": lambda i, q: dense_only.search(q, 10, "dense"),
        "after encoding: dense only (no BM25)": lambda i, q: served(i, q, "dense", dense_only),
        **{f"after encoding: SearchIndex {m}": (lambda i, q, m=m: served(i, q, m)) for m in ("dense", "hybrid")},
        **{f"SearchIndex.search {m}": (lambda i, q, m=m: index.search(q, k=10, retrieval=m)) for m in ("dense", "bm25", "hybrid")},
    }, queries, a.repeat)
    width = max(map(len, t))
    print(f"\n{'one query at a time':<{width}}  {'median ms':>10}")
    for name, v in t.items(): print(f"{name:<{width}}  {statistics.median(v):>10.3f}")
    d, h, pure = (t[n] for n in ("SearchIndex.search dense", "SearchIndex.search hybrid", "Retriever, dense only (no BM25)"))
    md, mh, mp = map(statistics.median, (d, h, pure))
    print(f"\nhybrid / dense = {mh / md:.3f}; hybrid - dense, median over queries: "
          f"{statistics.median(np.subtract(h, d)):+.2f} ms")
    print(f"hybrid / dense without any BM25 = {mh / mp:.3f}; hybrid - that: {statistics.median(np.subtract(h, pure)):+.2f} ms "
          "(BM25 + fusion + both ranks)")
    a_d, a_h, a_p = (t[f"after encoding: {n}"] for n in ("SearchIndex dense", "SearchIndex hybrid", "dense only (no BM25)"))
    print(f"after encoding (the part retrieval adds; encoding varies most on a shared CPU): hybrid - dense "
          f"{statistics.median(np.subtract(a_h, a_d)):+.3f} ms, hybrid - dense without any BM25 "
          f"{statistics.median(np.subtract(a_h, a_p)):+.3f} ms")

    factories = [f.strip() for f in a.factories.split(";") if f.strip()]
    if factories != ["Flat"]:
        from archivesrag.search import compare_index_types
        emb = np.asarray(index.dataset["embeddings"], dtype=np.float32)
        for row in compare_index_types(emb, qv, factories, k=10): print(row)


if __name__ == "__main__":
    main()
