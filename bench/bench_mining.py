"""Benchmark hard-negative mining: time spent encoding vs searching vs sampling, faiss vs NumPy brute force, and a
rerun with the embedding cache, for candidate pools of 1k, 10k and 100k synthetic archival passages.

    python bench/bench_mining.py --sizes 1000,10000,100000 --queries 500 --json bench/bench_mining.json

Encoding is the only step whose cost depends on the hardware's matmul speed by orders of magnitude (a 2-core CPU
encodes tens of passages a second with MiniLM, a GPU thousands). Pools larger than `--max_encode` are therefore not
encoded in full: the script encodes `--max_encode` of them for real, reports the encoding time *estimated* from that
measured rate (marked `~` in the table), and fills the cache with vectors derived from the real ones (each a real
embedding plus noise, renormalised) so that search, sampling and the cached rerun run for real at full size.
Set `--max_encode` to the largest size to encode everything.
"""
import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import go_offline

go_offline()

from archivesrag.core import write_jsonl  # noqa: E402
from archivesrag.models import resolve_embedder  # noqa: E402
from archivesrag.negatives import mine_hard_negatives  # noqa: E402
from archivesrag.retrieval import dense_search, embedding_cache_path, encode_cached, flat_index  # noqa: E402

SERIES = ["building permits", "council minutes", "payroll ledgers", "land title deeds", "harbour commission letters",
          "fixity audit logs", "email archives", "cloud storage contracts", "appraisal reports", "retention schedules",
          "digitised maps", "oral history tapes", "court exhibits", "school board registers", "AI pilot evaluations"]
ACTIONS = ["were appraised for permanent retention", "were scheduled for destruction after seven years",
           "failed a checksum verification during migration", "were transferred to the archives under accession",
           "were re-housed in acid-free boxes", "were described at file level in the catalogue",
           "were restricted under privacy legislation until", "were digitised at 400 dpi and quality checked",
           "were found to contain duplicate copies of", "were reviewed by the records manager against"]
PLACES = ["Port Alder", "the Wexley Street annex", "the Old Quay district", "the municipal data centre",
          "the provincial records centre", "the harbour office", "the county courthouse"]


def synthetic_passages(n: int, seed: int = 0) -> list[dict]:
    "n distinct archival-sounding passages (~40 words each), deterministic for a seed."
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s, a, p = rng.choice(SERIES), rng.choice(ACTIONS), rng.choice(PLACES)
        y = rng.randint(1890, 2023)
        text = (f"Reference PA/{i:06d}. The {s} held at {p}, covering {y} to {y + rng.randint(1, 40)}, {a} "
                f"{rng.choice(SERIES)} in box {rng.randint(1, 900)}. The file notes {rng.randint(2, 300)} items and "
                f"a finding aid prepared by the {rng.choice(['city clerk', 'archivist', 'records officer', 'auditor'])}.")
        out.append({"id": f"SYN-{i:06d}", "text": text, "series": s, "year": y, "place": p})
    return out


def synthetic_queries(passages: list[dict], n: int) -> list[dict]:
    return [{"id": p["id"], "query": f"which {p['series']} from {p['place']} around {p['year']} were handled",
             "positive": [p["text"]]} for p in passages[:n]]


def numpy_topk(q: np.ndarray, p: np.ndarray, k: int, batch: int = 256):
    "Brute-force exact top-k by inner product: matmul, argpartition, then sort the k."
    k = min(k, len(p))
    scores, idx = [], []
    for i in range(0, len(q), batch):
        s = q[i:i + batch] @ p.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1)
        scores.append(np.take_along_axis(ps, order, axis=1)); idx.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(scores), np.concatenate(idx)


def bench_size(n: int, n_queries: int, work: Path, max_encode: int, rate: dict, k: int = 200) -> dict:
    passages = synthetic_passages(n)
    queries = synthetic_queries(passages, min(n_queries, n))
    d = work / f"n{n}"
    write_jsonl(passages, d / "corpus.jsonl")
    write_jsonl(queries, d / "queries.jsonl")
    cache = d / "cache"
    model = resolve_embedder(None, role="miner")
    texts = [p["text"] for p in passages]
    estimated = n > max_encode
    if estimated:
        if "passages_per_s" not in rate:  # measure the encoding rate once, on max_encode real passages
            t = time.perf_counter()
            encode_cached(model, texts[:max_encode], cache_dir=work / "rate_cache")
            rate["passages_per_s"] = max_encode / (time.perf_counter() - t)
        base = encode_cached(model, texts[:max_encode], cache_dir=work / "rate_cache")
        rng = np.random.default_rng(0)
        emb = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.02, (n, base.shape[1])).astype(np.float32)
        emb[:max_encode] = base
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        f = embedding_cache_path(model, texts, cache)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, emb.astype(np.float32))
    t = time.perf_counter()
    cold = mine_hard_negatives(d / "queries.jsonl", d / "mined.jsonl", model, candidate_pool=d / "corpus.jsonl",
                               negative_number=15, range_for_sampling=f"2-{k}", cache_dir=cache)
    cold_total = time.perf_counter() - t
    encode_s = cold["seconds"]["encode"] + (n / rate["passages_per_s"] if estimated else 0.0)
    if estimated: cold_total += n / rate["passages_per_s"]
    t = time.perf_counter()
    warm = mine_hard_negatives(d / "queries.jsonl", d / "mined_again.jsonl", model, candidate_pool=d / "corpus.jsonl",
                               negative_number=15, range_for_sampling=f"2-{k}", cache_dir=cache)
    warm_total = time.perf_counter() - t
    same = (d / "mined.jsonl").read_bytes() == (d / "mined_again.jsonl").read_bytes()
    # faiss vs NumPy on the same (cached) vectors
    P = encode_cached(model, texts, cache_dir=cache)
    Q = encode_cached(model, list(dict.fromkeys(q["query"] for q in queries)), cache_dir=cache)  # as mining encodes them
    t = time.perf_counter(); fi, fs = dense_search(flat_index(P), Q, k); faiss_s = time.perf_counter() - t
    t = time.perf_counter(); ns, ni = numpy_topk(Q, P, k); numpy_s = time.perf_counter() - t
    agree = float(np.mean(np.abs(fs - ns) < 1e-4)) if fs.shape == ns.shape else 0.0
    return {"passages": n, "queries": len(queries), "encode_s": round(encode_s, 2), "encode_estimated": estimated,
            "search_s": cold["seconds"]["search"], "sample_s": cold["seconds"]["sample"],
            "cold_total_s": round(cold_total, 2), "warm_total_s": round(warm_total, 2),
            "warm_encode_s": warm["seconds"]["encode"], "rerun_identical": same,
            "faiss_s": round(faiss_s, 4), "numpy_s": round(numpy_s, 4), "numpy_over_faiss": round(numpy_s / faiss_s, 2),
            "topk_score_agreement": round(agree, 4), "short": cold["short"], "dropped_margin": cold["dropped_margin"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated pool sizes")
    ap.add_argument("--queries", type=int, default=500, help="queries per size (default 500)")
    ap.add_argument("--max_encode", type=int, default=2000,
                    help="encode pools up to this size for real; larger ones use the measured rate (default 2000)")
    ap.add_argument("--json", default="bench/bench_mining.json", help="where to write the figures")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    import torch
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_mining_"))
    rate, rows = {}, []
    import faiss  # noqa: F401  (imported and model loaded up front, so no row pays for them)
    from archivesrag.models import load_embedder
    load_embedder(resolve_embedder(None, role="miner"))
    for n in (int(s) for s in a.sizes.split(",")):
        print(f"\n=== {n} passages ===", flush=True)
        rows.append(bench_size(n, a.queries, work, a.max_encode, rate))
    print(f"\nmodel: bundled all-MiniLM-L6-v2, CPU threads: {torch.get_num_threads()}, "
          f"k=200, measured encoding rate: {rate.get('passages_per_s', float('nan')):.1f} passages/s "
          f"(on {a.max_encode} passages; '~' = estimated from it)")
    hdr = f"{'passages':>9} {'queries':>7} {'encode s':>10} {'search s':>9} {'sample s':>9} {'cold s':>9} {'rerun s':>8} " \
          f"{'faiss s':>8} {'numpy s':>8} {'np/faiss':>8}"
    print(hdr); print("-" * len(hdr))
    for r in rows:
        e = ("~" if r["encode_estimated"] else "") + f"{r['encode_s']:.1f}"
        c = ("~" if r["encode_estimated"] else "") + f"{r['cold_total_s']:.1f}"
        print(f"{r['passages']:>9} {r['queries']:>7} {e:>10} {r['search_s']:>9.3f} {r['sample_s']:>9.3f} {c:>9} "
              f"{r['warm_total_s']:>8.1f} {r['faiss_s']:>8.3f} {r['numpy_s']:>8.3f} {r['numpy_over_faiss']:>8.1f}")
    out = {"model": "all-MiniLM-L6-v2 (bundled)", "cpu_threads": torch.get_num_threads(), "k": 200,
           "encode_passages_per_s": rate.get("passages_per_s"), "max_encode": a.max_encode, "python": sys.version.split()[0],
           "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
