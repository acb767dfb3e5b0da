"""SearchIndex (05_search): build / save / reload, hybrid retrieval, the seed's search(), `archivesrag search`.

Real parts only: the bundled MiniLM, faiss, bm25s, files on disk, the installed CLI."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from archivesrag.core import InputError, read_jsonl, write_jsonl
from archivesrag.corpus import load_corpus, sample_path
from archivesrag.models import resolve_embedder
from archivesrag.search import SearchIndex, compare_index_types, default_index, search
from helpers import run_cli as _cli

CODE = "PA/RS/2019-044"  # a retention-schedule reference code that occurs in one passage of the sample archive
CODE_RE = re.compile(r"\b[A-Z]{2,4}[/-][A-Z]{2,3}[/-]\d{4}-\d{2,3}\b")
QUERIES = ["How long are building permit files kept?", "fixity check failure after storage migration",
           "cloud storage contract for records outside the country"]

pytestmark = pytest.mark.fast  # a small index of the sample archive and MiniLM: the whole file is quick


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    "The first 20 documents of the sample archive, plus the one holding CODE: a small raw archive file."
    docs = read_jsonl(sample_path())
    with_code = [d for d in docs if CODE in d["text"]]
    small = docs[:20] + [d for d in with_code if d not in docs[:20]]
    path = tmp_path_factory.mktemp("corpus") / "archive.jsonl"
    write_jsonl(small, path)
    return path


@pytest.fixture(scope="module")
def passages(corpus_file): return load_corpus(corpus_file, verbose=False)


@pytest.fixture(scope="module")
def built(passages, tmp_path_factory):
    index = SearchIndex.build(passages)
    folder = index.save(tmp_path_factory.mktemp("index") / "index")
    return index, folder


def test_build_save_reload_same_topk(built, passages):
    index, folder = built
    assert {"dataset", "embeddings.faiss", "bm25", "manifest.json"} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dims"] == 384 and manifest["passages"] == len(passages) and manifest["index_factory"] == "Flat"
    assert manifest["model"] == index.model_name_or_path and len(manifest["corpus_fingerprint"]) == 16
    assert os.path.isabs(manifest["model"]) and len(manifest["model_fingerprint"]) == 16
    assert manifest["text_fields"] == ["title", "text"] and manifest["fusion_weight"] == 0.3
    again = SearchIndex.load(folder)
    assert again.faiss_index.ntotal == len(passages) and again.bm25 is not None
    for retrieval in ("dense", "bm25", "hybrid"):
        before = index.search(QUERIES, k=5, retrieval=retrieval)
        after = again.search(QUERIES, k=5, retrieval=retrieval)
        assert [[h["id"] for h in r] for r in after] == [[h["id"] for h in r] for r in before]
        assert np.allclose([h["score"] for r in after for h in r], [h["score"] for r in before for h in r], atol=1e-5)
    # saving a loaded index back into its own folder keeps it loadable
    again.save(folder)
    assert [h["id"] for h in SearchIndex.load(folder).search(QUERIES[0], k=3)] == [h["id"] for h in index.search(QUERIES[0], k=3)]


def test_result_fields(built):
    index, _ = built
    hits = index.search(QUERIES[0], k=3)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    for h in hits:
        assert {"id", "title", "score", "dense_score", "dense_rank", "bm25_rank", "text", "doc_id"} <= set(h)
        assert -1.0 <= h["dense_score"] <= 1.0 and h["retrieval"] == "hybrid"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    dense = index.search(QUERIES[0], k=3, retrieval="dense")
    assert [h["dense_rank"] for h in dense] == [1, 2, 3]
    assert dense[0]["score"] == pytest.approx(dense[0]["dense_score"], abs=1e-5)  # dense score is the cosine


def test_refuses_other_model_and_incomplete_folder(built, tmp_path):
    _, folder = built
    other = tmp_path / "other-model"
    other.mkdir()
    with pytest.raises(InputError, match="was built with the model"): SearchIndex.load(folder, model_name_or_path=str(other))
    SearchIndex.load(folder, model_name_or_path="minilm")  # the same (bundled) model under an alias is fine
    with pytest.raises(InputError, match="not a complete search index"): SearchIndex.load(tmp_path)


def test_hybrid_differs_from_both_singles(built):
    index, _ = built
    differs_dense = differs_bm25 = False
    for q in QUERIES + [CODE]:
        ids = {r: [h["id"] for h in index.search(q, k=10, retrieval=r)] for r in ("dense", "bm25", "hybrid")}
        differs_dense |= ids["hybrid"] != ids["dense"]
        differs_bm25 |= ids["hybrid"] != ids["bm25"]
    assert differs_dense and differs_bm25


def test_reference_code_first_with_hybrid(built, passages):
    index, _ = built
    holders = [pid for pid, t in zip(passages["id"], passages["text"]) if CODE in t]
    assert len(holders) == 1, holders
    top = index.search(CODE, k=3)  # hybrid is the default
    assert top[0]["id"] == holders[0] and top[0]["retrieval"] == "hybrid" and top[0]["bm25_rank"] == 1
    # every other code that occurs in exactly one passage, too (the dense ranking alone misses most of them)
    found = {}
    for pid, t in zip(passages["id"], passages["text"]):
        for c in set(CODE_RE.findall(t)): found.setdefault(c, []).append(pid)
    unique = {c: p[0] for c, p in found.items() if len(p) == 1}
    assert len(unique) >= 5
    firsts = [index.search(c, k=1)[0]["id"] == pid for c, pid in unique.items()]
    assert sum(firsts) / len(firsts) >= 0.9


def test_seed_search_shape(built):
    index, _ = built
    scores, examples = search(QUERIES[0], k=3, index=index)
    assert len(scores) == 3 and len(examples["text"]) == 3 and "embeddings" not in examples
    d_scores, d_examples = index.search_examples(QUERIES[0], k=3, retrieval="dense")
    assert d_examples["id"] == [h["id"] for h in index.search(QUERIES[0], k=3, retrieval="dense")]
    assert d_scores[0] >= d_scores[-1]


def test_approximate_indexes(built, tmp_path, passages):
    index, _ = built
    emb = np.asarray(index.dataset["embeddings"], dtype=np.float32)
    rows = compare_index_types(emb, index.encode(QUERIES), ("Flat", "HNSW32", "IVF4,Flat"), k=5, nprobe=4)
    assert [r["index"] for r in rows] == ["Flat", "HNSW32", "IVF4,Flat"]
    assert rows[0]["recall@5_vs_flat"] == 1.0 and rows[1]["recall@5_vs_flat"] >= 0.9
    assert rows[2]["recall@5_vs_flat"] == 1.0  # nprobe = all 4 cells: exhaustive
    small = passages.select(range(12))
    hnsw = SearchIndex.build(small, index_factory="HNSW32", bm25=False)
    hnsw.save(tmp_path / "hnsw")
    again = SearchIndex.load(tmp_path / "hnsw")
    assert again.manifest["index_factory"] == "HNSW32" and again.bm25 is None
    assert [h["id"] for h in again.search(QUERIES[0], k=3)] == [h["id"] for h in hnsw.search(QUERIES[0], k=3, retrieval="dense")]
    with pytest.raises(InputError, match="no BM25 part"): again.search(QUERIES[0], retrieval="bm25")


def test_bad_corpus_names_file_and_line(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"id": "a#0", "title": "A", "text": "ok"}\n{"id": "b#0", "text": "truncated\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: malformed JSON"): SearchIndex.build(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a#0", "text": "one"}\n{"id": "a#0", "text": "two"}\n')
    with pytest.raises(InputError, match="duplicate"): SearchIndex.build(dup)


def test_cli_search_offline(corpus_file, tmp_path):
    index_dir = tmp_path / "cli-index"
    r = _cli("search", "building permit files retention", "--k", "3", "--corpus_file", str(corpus_file),
             "--index_dir", str(index_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (index_dir / "manifest.json").exists()
    lines = r.stdout.splitlines()
    ranked = [l for l in lines if re.match(r"^\d\. ARC-\d{4}#\d+  ", l)]
    assert [l.split(".")[0] for l in ranked] == ["1", "2", "3"]
    assert "dense rank" in r.stdout and "bm25 rank" in r.stdout and "score" in r.stdout
    # second run: loads the saved index (no --corpus_file), exact code query first
    r3 = _cli("search", CODE, "--k", "1", "--index_dir", str(index_dir), "--json", cwd=tmp_path)
    hit = json.loads(r3.stdout.strip().splitlines()[-1])
    assert CODE in hit["text"] and hit["retrieval"] == "hybrid"


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"id": "a#0", "text": "ok"}\n{oops\n')
    r = _cli("search", "x", "--corpus_file", str(bad), "--index_dir", str(tmp_path / "ix"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corpus.jsonl:2: malformed JSON" in r.stderr.strip().splitlines()[-1]


# ---- an index is bound to its model ---------------------------------------------------------------------------------

def test_index_refuses_a_changed_or_missing_model(passages, tmp_path, monkeypatch):
    model = tmp_path / "archivesrag"  # a model folder of our own, named by a relative path as a user would
    shutil.copytree(resolve_embedder(None), model)
    with monkeypatch.context() as m:
        m.chdir(tmp_path)
        SearchIndex.build(passages.select(range(8)), model_name_or_path="archivesrag").save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["model"] == str(model.resolve())  # absolute: the index opens from any folder
    assert SearchIndex.load(tmp_path / "ix").search(QUERIES[0], k=1)
    (model / "README.md").write_text("# a model card edited by `archivesrag evaluate`\n")  # not weights: still fine
    SearchIndex.load(tmp_path / "ix")
    os.utime(model / "model.safetensors", (1, 1))  # the weights changed after the index was built
    with pytest.raises(InputError, match="has changed since this index was built.*rebuild it: delete"):
        SearchIndex.load(tmp_path / "ix")
    shutil.rmtree(model)
    r = _cli("search", "permits", "--index_dir", tmp_path / "ix", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "offline: using" not in r.stdout
    assert "which is not there any more" in r.stderr.strip().splitlines()[-1]


# ---- issue 13: damaged index files, dates, mistyped folders, bad queries -------------------------------------------

def _damage(folder, how):
    if how == "truncated faiss":
        f = folder / "embeddings.faiss"; f.write_bytes(f.read_bytes()[:200]); return "embeddings.faiss: damaged"
    if how == "deleted faiss":
        (folder / "embeddings.faiss").unlink(); return "embeddings.faiss: missing"
    if how == "truncated arrow":
        f = next((folder / "dataset").glob("*.arrow")); f.write_bytes(f.read_bytes()[:300]); return "dataset: damaged"
    if how == "broken manifest":
        (folder / "manifest.json").write_text('{"format": 2, "model": '); return "manifest.json:1: a damaged search index manifest"
    if how == "damaged bm25":
        f = next((folder / "bm25").glob("*.npy")); f.write_bytes(f.read_bytes()[:20]); return "bm25: damaged"


@pytest.mark.parametrize("how", ["truncated faiss", "deleted faiss", "truncated arrow", "broken manifest", "damaged bm25"])
def test_damaged_index_is_one_line_naming_the_file(built, tmp_path, how):
    _, folder = built
    copy = tmp_path / "index"
    shutil.copytree(folder, copy)
    expected = _damage(copy, how)
    with pytest.raises(InputError, match=re.escape(expected)): SearchIndex.load(copy)
    r = _cli("search", "permits", "--index_dir", copy, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("archivesrag search: error:") and expected in line
    assert "rebuild" in line and "archivesrag search --index_dir" in line


def test_json_output_with_dates(tmp_path):
    docs = [{"id": f"D-{i}", "title": f"Permit file {i}", "text": f"Building permit {i} approved; kept 10 years.",
             "date": f"2019-03-0{i}"} for i in range(1, 5)]
    write_jsonl(docs, tmp_path / "dated.jsonl")
    r = _cli("search", "building permit", "--corpus_file", tmp_path / "dated.jsonl", "--index_dir", tmp_path / "ix",
             "--json", "--k", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    hits = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert len(hits) == 2 and all(re.fullmatch(r"2019-03-0\d", h["date"]) for h in hits)


def test_mistyped_index_dir_is_an_error_unless_a_corpus_is_given(corpus_file, tmp_path):
    r = _cli("search", "permits", "--index_dir", tmp_path / "indx-typo", cwd=tmp_path)
    assert r.returncode == 2 and "no search index here" in r.stderr and not (tmp_path / "indx-typo").exists()
    with pytest.raises(InputError, match="no search index here"): default_index(index_dir=tmp_path / "empty")
    index = default_index(corpus_file, index_dir=tmp_path / "new", verbose=False)  # with --corpus_file: built there
    assert (tmp_path / "new" / "manifest.json").exists() and len(index) > 0


def test_empty_and_broken_queries(built, tmp_path):
    index, folder = built
    for bad, msg in [("   ", "empty"), ("\t\n", "empty"), ("permits \ud800", "lone surrogate")]:
        with pytest.raises(InputError, match=msg): index.search(bad)
    r = _cli("search", "   ", "--index_dir", folder, cwd=tmp_path)
    assert r.returncode == 2 and "the query is empty" in r.stderr.strip().splitlines()[-1]
    # invalid UTF-8 on the command line: Python hands the console script's `main` the bytes decoded as os.fsdecode
    # does (a lone surrogate for \xff), so that is what the command gets here
    r = _cli("search", os.fsdecode(b"permits \xff"), "--index_dir", folder, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "lone surrogate" in r.stderr
