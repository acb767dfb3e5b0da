"""Search benchmark: index build time and search latency on the sample archive; faiss Flat vs HNSW vs IVF.

    python bench/bench_search.py [--model_name_or_path PATH] [--n_queries 100] [--repeat 3]

Prints one table. Latency is ms per query, one query at a time (what `archivesrag search` does):
`faiss ms` excludes query encoding (pre-encoded query vectors, faiss only), `dense ms` and `hybrid ms` include it
(`SearchIndex.search`, with result assembly; hybrid adds BM25 and ranx fusion). Recall@10 is measured against Flat.
"""
import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np


def _queries(index, n):
    try:
        from archivesrag.queries import load_sample_queries
        qs = [q["query"] for q in load_sample_queries()]
        src = "sample queries"
    except Exception:
        qs, src = [t for t, c in zip(index.dataset["title"], index.dataset["chunk"]) if c == 0], "passage titles"
    return qs[:n], src


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--n_queries", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3, help="timed passes over the queries (the median is reported)")
    p.add_argument("--factories", default="Flat;HNSW32;IVF16,Flat", help="faiss factory strings separated by ';'")
    a = p.parse_args(argv)
    import faiss
    import torch
    from archivesrag.corpus import load_sample
    from archivesrag.search import SearchIndex

    factories = [f.strip() for f in a.factories.split(";") if f.strip()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, faiss {faiss.__version__}, GPUs for faiss: {faiss.get_num_gpus()}")
    t0 = time.perf_counter(); corpus = load_sample(verbose=False); t_chunk = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SearchIndex.build(corpus, model_name_or_path=a.model_name_or_path, index_factory="Flat")
    t_build = time.perf_counter() - t0
    # the parts of the build: BM25 alone, faiss alone (below, per factory); the rest is embedding
    t0 = time.perf_counter(); index._build_bm25(); t_bm25 = time.perf_counter() - t0
    print(f"sample archive: {len(corpus)} passages; chunking {t_chunk:.1f} s; SearchIndex.build (embed + faiss Flat "
          f"+ BM25) {t_build:.1f} s; of which BM25 {t_bm25 * 1000:.0f} ms; model {index.manifest['model']}")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter(); index.save(d); t_save = time.perf_counter() - t0
        t0 = time.perf_counter(); SearchIndex.load(d); t_load = time.perf_counter() - t0
    print(f"save {t_save * 1000:.0f} ms, reload (no re-embedding) {t_load * 1000:.0f} ms")

    queries, src = _queries(index, a.n_queries)
    index.encode(queries[:2])  # warm-up
    t0 = time.perf_counter(); qv = index.encode(queries); t_enc_batch = (time.perf_counter() - t0) * 1000 / len(queries)
    enc = []
    for q in queries: t0 = time.perf_counter(); index.encode([q]); enc.append((time.perf_counter() - t0) * 1000)
    print(f"{len(queries)} queries ({src}); query encoding alone: {statistics.median(enc):.2f} ms/query one at a time, "
          f"{t_enc_batch:.2f} ms/query batched")

    def per_query(fn):
        passes = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for i, q in enumerate(queries): fn(i, q)
            passes.append((time.perf_counter() - t0) * 1000 / len(queries))
        return statistics.median(passes)

    rows, exact = [], None
    for f in factories:
        index.dataset.drop_index("embeddings")
        index.manifest["index_factory"] = f
        t0 = time.perf_counter(); index._add_faiss(); t_faiss = time.perf_counter() - t0
        fi = index.faiss_index
        _, found = fi.search(qv, 10)
        if exact is None: exact = found
        recall = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(found, exact)]))
        ms_faiss = per_query(lambda i, q: fi.search(qv[i:i + 1], 10))
        ms_dense = per_query(lambda i, q: index.search(q, k=10, retrieval="dense"))
        ms_hybrid = per_query(lambda i, q: index.search(q, k=10, retrieval="hybrid"))
        rows.append((f, t_faiss * 1000, recall, ms_faiss, ms_dense, ms_hybrid))
    print(f"\n{'index':<12}{'faiss build ms':>15}{'recall@10':>11}{'faiss ms':>10}{'dense ms':>10}{'hybrid ms':>11}")
    print(f"{'':<12}{'':>15}{'vs Flat':>11}{'(no enc.)':>10}{'(w/ enc.)':>10}{'(w/ enc.)':>11}")
    for f, b, r, x, d, h in rows: print(f"{f:<12}{b:>15.1f}{r:>11.3f}{x:>10.3f}{d:>10.2f}{h:>11.2f}")


if __name__ == "__main__":
    main()
