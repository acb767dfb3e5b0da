"""One retrieval layer (00c_retrieval): numpy fusion = ranx fusion, and `evaluate` scores exactly what `search` serves.

Real parts only: the bundled MiniLM, faiss, bm25s, ranx, files on disk."""
import json

import numpy as np
import pytest

from archivesrag.core import InputError, markdown_table, write_jsonl
from archivesrag.corpus import load_sample, save_corpus
from archivesrag.evaluation import evaluate, evaluate_systems, queries_from_records, tuned_fusion_weight, visible_corpus
from archivesrag.splits import save_split, split_by_document
from archivesrag.queries import load_sample_queries
from archivesrag.retrieval import (Rankings, Retriever, bm25_search, build_bm25, check_queries, encode_cached,
                                   flat_index, fuse, model_identity, passage_texts)
from archivesrag.search import SearchIndex
from helpers import run_cli


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    "Embeddings cached in a temporary folder, not in the home directory."
    monkeypatch.setenv("ARCHIVESRAG_CACHE", str(tmp_path_factory.getbasetemp() / "emb-cache"))


@pytest.fixture(scope="module")
def part():
    "The first 80 passages of the sample archive, with their bundled queries."
    corpus = load_sample(verbose=False).select(range(80))
    keep = set(corpus["id"])
    records = [r for r in load_sample_queries() if r["id"] in keep]
    assert len(records) >= 40
    return corpus, records


# ---- fusion ---------------------------------------------------------------------------------------------------------

def _ranx_fused(dense, lexical, method, weight):
    from ranx import Run, fuse as ranx_fuse
    def run(r, s, ok): return Run({str(n): {str(j): float(x) for j, x, v in zip(r[n], s[n], ok[n]) if v} for n in range(len(r))})
    runs = [run(*dense, dense[0] >= 0), run(*lexical, (lexical[0] >= 0) & (lexical[1] > 0))]
    if method == "wsum": return ranx_fuse(runs, norm="min-max", method="wsum", params={"weights": [weight, 1 - weight]}).to_dict()
    return ranx_fuse(runs, norm=None, method="rrf", params={"k": 60}).to_dict()


@pytest.mark.fast
@pytest.mark.parametrize("method,weight", [("wsum", 0.3), ("wsum", 0.7), ("rrf", 0.5)])
def test_numpy_fusion_equals_ranx(method, weight):
    rng = np.random.default_rng(0)
    nq, k, n = 7, 12, 40
    d_rows = np.stack([rng.permutation(n)[:k] for _ in range(nq)])
    l_rows = np.stack([rng.permutation(n)[:k] for _ in range(nq)])
    d_sc = -np.sort(-rng.random((nq, k)), axis=1)
    l_sc = -np.sort(-rng.random((nq, k)) * 10, axis=1)
    l_sc[2, 5:] = 0.0    # BM25 found only 5 passages for query 2 (score 0 = no common word)
    d_rows[3, 9:] = -1   # faiss padded query 3
    ours = fuse((d_rows, d_sc), (l_rows, l_sc), weight, method)  # every ranking is (rows, scores)
    theirs = _ranx_fused((d_rows, d_sc), (l_rows, l_sc), method, weight)
    for q, (rows, scores) in enumerate(ours):
        assert set(map(str, rows)) == set(theirs[str(q)])
        assert np.allclose(scores, [theirs[str(q)][str(r)] for r in rows], atol=1e-9)
        assert (np.diff(scores) <= 1e-12).all()  # best first


@pytest.mark.fast
def test_fusion_edges():
    empty_bm25 = (np.array([[0, 1, 2]]), np.zeros((1, 3)))  # no query word anywhere
    dense = (np.array([[2, 0, 1]]), np.array([[0.9, 0.5, 0.1]]))
    rows, scores = fuse(dense, empty_bm25, 0.3)[0]
    assert rows.tolist() == [2, 0, 1]  # the dense order, scaled by its weight
    assert fuse((np.zeros((0, 3), int), np.zeros((0, 3))), (np.zeros((0, 3), int), np.zeros((0, 3)))) == []
    with pytest.raises(InputError, match="between 0 and 1"): fuse(dense, empty_bm25, 1.5)
    with pytest.raises(InputError, match="unknown fusion method"): fuse(dense, empty_bm25, 0.5, "max")
    with pytest.raises(InputError, match="no dense part"):
        Retriever(None, build_bm25(["retention schedule", "fixity check"])).select(Rankings(None, empty_bm25), 2, "dense")


@pytest.mark.fast
def test_check_queries_and_markdown_table():  # markdown_table: archivesrag.core
    assert check_queries(["a", "b"]) == ["a", "b"]
    for bad, msg in [("  \n", "empty"), ("x\ud800y", "lone surrogate"), ([3], "must be a string")]:
        with pytest.raises(InputError, match=msg): check_queries(bad)
    t = markdown_table([{"system": "BM25", "ndcg@10": 0.41234, "note": "a|b"}])
    assert t.splitlines() == ["| system | ndcg@10 | note |", "|---|---|---|", "| BM25 | 0.412 | a\\|b |"]


@pytest.mark.fast
def test_dense_search_matches_brute_force():
    texts = passage_texts(load_sample(verbose=False).select(range(24)))  # a small slice: the same code at any size
    P = encode_cached(None, texts)
    r = Retriever(flat_index(P), build_bm25(texts), model=model_identity(None)[0])
    qs = [q["query"] for q in load_sample_queries()[:5]]
    Q = r.encode(qs)
    rows = [h[0] for h in r.search(qs, k=5, retrieval="dense")]
    assert [x.tolist() for x in rows] == np.argsort(-(Q @ P.T), axis=1)[:, :5].tolist()
    assert bm25_search(r.bm25, qs, 5)[0].shape == (5, 5)


# ---- evaluate scores what search serves ----------------------------------------------------------------------------

def test_evaluate_hybrid_ranking_equals_search_index(part, tmp_path):
    corpus, records = part
    corpus, hidden = visible_corpus(corpus)  # the sample has closed records: search hides them, so evaluation must
    assert hidden                            # score the same passages (archive_set does this for `evaluate`)
    queries, qrels, _ = queries_from_records(records[:30], corpus)
    for weight in (0.3, 0.8):
        res = evaluate_systems(corpus, queries, qrels, {"BM25": "bm25", "base": "minilm"}, k=10, fusion_weight=weight,
                               return_runs=True)
        index = SearchIndex.build(corpus, model_name_or_path="minilm", fusion_weight=weight)
        qids = list(queries)
        served = index.search([queries[q] for q in qids], k=10)
        for q, hits in zip(qids, served):
            assert list(res["runs"]["base+BM25"][q]) == [h["id"] for h in hits], q
            assert np.allclose(list(res["runs"]["base+BM25"][q].values()), [h["score"] for h in hits], atol=1e-9)
        dense = index.search([queries[q] for q in qids], k=10, retrieval="dense")
        assert [list(res["runs"]["base"][q]) for q in qids] == [[h["id"] for h in hs] for hs in dense]
        assert [list(res["runs"]["BM25"][q]) for q in qids] == \
               [[h["id"] for h in hs] for hs in index.search([queries[q] for q in qids], k=10, retrieval="bm25")]


def test_evaluate_writes_the_tuned_weight_into_the_index_and_search_uses_it(part, tmp_path):
    corpus, records = part
    save_corpus(corpus, tmp_path / "corpus.jsonl")
    write_jsonl(records, tmp_path / "queries.jsonl")
    split = save_split(split_by_document(corpus, test_size=0.3, val_size=0.3, seed=1), tmp_path / "split.json")
    SearchIndex.build(tmp_path / "corpus.jsonl", model_name_or_path="minilm").save(tmp_path / "index")
    res = evaluate(base_model="minilm", corpus_file=tmp_path / "corpus.jsonl", queries_file=tmp_path / "queries.jsonl",
                   split_file=split, output_dir=tmp_path / "eval", plots=False, verbose=False, index_dir=tmp_path / "index")
    w = res["fusion_weight"]["base"]
    assert "validation queries" in res["fusion"]["base+BM25"]["chosen"]
    assert tuned_fusion_weight(tmp_path / "eval" / "metrics.json", "base") == w
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["fusion_weight"] == w and manifest["fusion_weight_from"]["system"] == "base"
    index = SearchIndex.load(tmp_path / "index")
    assert index.retriever.fusion_weight == w
    # the CLI serves that weight: `search --json` shows the same ranking as the index with weight w
    q = records[0]["query"]
    r = run_cli("search", q, "--k", "5", "--index_dir", tmp_path / "index", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [json.loads(l)["id"] for l in r.stdout.splitlines() if l.startswith("{")] == \
           [h["id"] for h in index.search(q, k=5, fusion_weight=w)]
    # an index built with another model is refused, saying which
    other = tmp_path / "other"
    SearchIndex.build(tmp_path / "corpus.jsonl", model_name_or_path="minilm").save(other)
    m = json.loads((other / "manifest.json").read_text()); m["model"] = "/somewhere/else"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="no evaluated model"):
        evaluate(base_model="minilm", corpus_file=tmp_path / "corpus.jsonl", queries_file=tmp_path / "queries.jsonl",
                 split_file=split, output_dir=tmp_path / "eval2", plots=False, verbose=False, index_dir=other)
