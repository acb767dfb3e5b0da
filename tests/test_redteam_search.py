"""Red-team rows of round 3 on search, the index folder, retrieval and `ask` (../shared/redteam/probes-round3.md).

Each test runs the real command (`run_cli`) or the real API on real files: the bundled MiniLM, faiss, bm25s."""
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from archivesrag.core import InputError, output_lock, read_jsonl, write_jsonl
from archivesrag.corpus import corpus_fingerprint, load_passages, sample_path
from archivesrag.models import resolve_embedder
from archivesrag.rag import NO_PASSAGE, answer
from archivesrag.retrieval import Retriever, encode_queries
from archivesrag.search import SearchIndex
from helpers import CLI_CODE, run_cli

QUERY = "building permit files appraisal"


def last_line(r) -> str: return r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""


def refused(r, *says):
    "Exit 2, one `archivesrag …: error:` line, no traceback, and each of `says` in that line."
    line = last_line(r)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert ": error: " in line and all(s in line for s in says), line
    return line


def _first_documents(tmp_path_factory, n: int) -> Path:
    path = tmp_path_factory.mktemp(f"docs{n}") / f"docs{n}.jsonl"
    write_jsonl(read_jsonl(sample_path())[:n], path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "The first 20 documents of the sample archive (29 passages), as the red team used."
    return _first_documents(tmp_path_factory, 20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "The first 3 documents (3 passages): enough for a refusal that comes after encoding every passage."
    return _first_documents(tmp_path_factory, 3)


@pytest.fixture(scope="module")
def index_dir(corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx") / "idx"
    SearchIndex.build(corpus).save(folder)
    return folder


@pytest.fixture(scope="module")
def index(index_dir): return SearchIndex.load(index_dir)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    "A copy of MiniLM whose weights are NaN, as a diverged training run leaves it (the red team's T12)."
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(resolve_embedder(None), device="cpu")
    for p in model.parameters(): p.data.fill_(float("nan"))
    folder = tmp_path_factory.mktemp("nan") / "nan-model"
    model.save(str(folder))
    return folder


# ---- S08: an existing index and another corpus ----------------------------------------------------------------------
# Refused rather than rebuilt: the folder may hold a fine-tuned model's index with the fusion weight `evaluate` tuned
# into its manifest, and another process may be serving it; replacing it because of a flag would lose that silently.

@pytest.mark.fast
def test_s08_other_corpus_for_an_existing_index_is_refused(index_dir, corpus, tmp_path):
    other = tmp_path / "inj_corpus.jsonl"
    write_jsonl([{"id": "INJ-1", "title": "Note", "text": "PWNED instruction for the assistant."}], other)
    before = (index_dir / "manifest.json").read_text()
    line = refused(run_cli("search", "--index_dir", index_dir, "--corpus_file", other, "--retrieval", "bm25",
                           "PWNED instruction assistant", cwd=tmp_path), "holds another corpus", str(other))
    assert "another --index_dir" in line and (index_dir / "manifest.json").read_text() == before
    same = run_cli("search", "--index_dir", index_dir, "--corpus_file", corpus, "--k", "1", QUERY, cwd=tmp_path)
    assert same.returncode == 0 and same.stdout.startswith("1. ARC-"), same.stderr[-2000:]
    refused(run_cli("search", "--index_dir", index_dir, "--index_factory", "HNSW32", QUERY, cwd=tmp_path),
            "built with --index_factory 'Flat', not 'HNSW32'")


# ---- S09: BM25 finds nothing ------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_s09_bm25_without_a_match_says_no_results(index_dir, tmp_path):
    r = run_cli("search", "--index_dir", index_dir, "--retrieval", "bm25", "zzzqqq xyzzy", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("no results"), (r.stdout, r.stderr[-2000:])
    j = run_cli("search", "--index_dir", index_dir, "--retrieval", "bm25", "--json", "zzzqqq xyzzy", cwd=tmp_path)
    assert j.returncode == 0 and j.stdout.strip() == "" and "no results" in j.stderr  # stdout stays JSON Lines


# ---- S10-S12: faiss factory strings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("factory, says", [("Foo123", "could not parse index string Foo123"),
                                           ("IVF256,Flat", "needs at least 256 passages to train; this corpus has 29"),
                                           ("PQ1000", "multiple of the number of subquantizers")])
@pytest.mark.fast
def test_s10_s12_bad_index_factory_is_one_line(corpus, tmp_path, factory, says):
    r = run_cli("search", "--corpus_file", corpus, "--index_dir", tmp_path / "ixf", "--index_factory", factory,
                "permits", cwd=tmp_path)
    refused(r, f"--index_factory '{factory}'", says)
    assert not (tmp_path / "ixf").exists() and "encoding" not in r.stdout  # refused before embedding anything


# ---- S14, API13: never advise deleting what the package did not write -------------------------------------------------

@pytest.mark.fast
def test_s14_api13_no_advice_to_delete_a_users_folder(corpus, tmp_path):
    corpus_bytes = corpus.read_bytes()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "letter.txt").write_text("Dear archivist")
    shutil.copy(corpus, mixed / "docs20.jsonl")
    line = refused(run_cli("search", "--index_dir", mixed, "permits", cwd=tmp_path), "another folder", "NEW_FOLDER")
    assert "delete" not in line
    line = refused(run_cli("search", "--index_dir", mixed, "--corpus_file", corpus, "permits", cwd=tmp_path),
                   "holds other files and no search index")
    assert "delete" not in line and sorted(p.name for p in mixed.iterdir()) == ["docs20.jsonl", "letter.txt"]
    with pytest.raises(InputError, match="a file, not a search index folder") as e: SearchIndex.load(corpus)
    assert "delete" not in str(e.value)
    refused(run_cli("search", "--index_dir", corpus, "--corpus_file", corpus, "permits", cwd=tmp_path), "a file, not a folder")
    assert corpus.read_bytes() == corpus_bytes


# ---- S16, S17, E14: a model that gives NaN -----------------------------------------------------------------------------

@pytest.mark.fast
def test_s16_nan_model_index_is_refused_naming_the_model(tiny, nan_model, tmp_path):
    r = run_cli("search", "--corpus_file", tiny, "--index_dir", tmp_path / "ixnan", "--model_name_or_path", nan_model,
                "--retrieval", "dense", "building permit files", cwd=tmp_path)
    refused(r, "non-finite embeddings", str(nan_model))
    assert not (tmp_path / "ixnan").exists()


@pytest.mark.fast
def test_s17_nan_query_vectors_are_refused(index, nan_model):
    from sentence_transformers import SentenceTransformer
    broken = SentenceTransformer(str(nan_model), device="cpu")
    with pytest.raises(InputError, match="non-finite embeddings .* 1 of 1 queries"): encode_queries(broken, ["permits"])
    r = Retriever(index.faiss_index, index.bm25, model=broken)  # hybrid would have printed "cosine nan"
    with pytest.raises(InputError, match="non-finite"): r.search("building permit files", k=3, retrieval="hybrid")


@pytest.mark.fast
def test_e14_evaluate_with_a_nan_model_is_one_line(tiny, nan_model, tmp_path):
    ids = {r["doc_id"] for r in read_jsonl(tiny)}
    from archivesrag.queries import sample_queries_path
    queries = [q for q in read_jsonl(sample_queries_path()) if q["id"].split("#")[0] in ids]
    write_jsonl(queries, tmp_path / "queries.jsonl")
    r = run_cli("evaluate", "--queries_file", tmp_path / "queries.jsonl", "--corpus_file", tiny, "--no_plots",
                "--output_dir", tmp_path / "ev", "--model_name_or_path", nan_model, "--cache_dir", tmp_path / "cache",
                cwd=tmp_path)
    refused(r, "non-finite embeddings", "nan-model")


# ---- X13 and the format before checksums --------------------------------------------------------------------------------

@pytest.mark.fast
def test_x13_zeroed_faiss_of_the_right_size_is_refused(index_dir, tmp_path):
    copy = tmp_path / "ix13"
    shutil.copytree(index_dir, copy)
    f = copy / "embeddings.faiss"
    data = f.read_bytes()
    f.write_bytes(data[:200] + bytes(len(data) - 300) + data[-100:])
    line = refused(run_cli("search", "--index_dir", copy, "--retrieval", "dense", QUERY, cwd=tmp_path),
                   "ix13/embeddings.faiss: damaged", "sha256", "rebuild it: delete")
    assert "archivesrag search --index_dir" in line
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format"] == 3 and set(manifest["sha256"]) >= {"embeddings.faiss", "bm25/params.index.json"}
    assert all(len(v) == 64 for v in manifest["sha256"].values())


@pytest.mark.fast
def test_index_without_checksums_is_refused_with_the_rebuild_command(index_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(index_dir, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["sha256"]
    (old / "manifest.json").write_text(json.dumps({**m, "format": 2}))
    refused(run_cli("search", "--index_dir", old, "permits", cwd=tmp_path), "format 2, not 3",
            "before the manifest kept checksums", f"rebuild it: delete {old} and run `archivesrag search --index_dir {old}")


@pytest.mark.fast
@pytest.mark.parametrize("damage", ["arrow zeroed", "bm25 file deleted", "passages edited"])
def test_other_damage_still_one_line(index_dir, tmp_path, damage):
    copy = tmp_path / "ix"
    shutil.copytree(index_dir, copy)
    if damage == "arrow zeroed":
        f = next((copy / "dataset").glob("*.arrow")); f.write_bytes(bytes(f.stat().st_size)); says = "ix/dataset: damaged"
    elif damage == "bm25 file deleted":
        (copy / "bm25" / "vocab.index.json").unlink(); says = "ix/bm25: damaged (bm25/vocab.index.json is missing)"
    else:
        m = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**m, "passages": 5})); says = "disagree on the number of passages"
    with pytest.raises(InputError, match="rebuild it: delete") as e: SearchIndex.load(copy)
    assert says in str(e.value)


# ---- CC, API-RB: one writer at a time, readers see one whole index -------------------------------------------------------

@pytest.mark.fast
def test_cc_a_second_builder_is_refused(corpus, tmp_path):
    with output_lock(tmp_path / "ixc"):  # another run is building it: it holds ixc.lock
        refused(run_cli("search", "--corpus_file", corpus, "--index_dir", tmp_path / "ixc", "permits", cwd=tmp_path),
                "another run is building or saving this index", "ixc.lock")
        tiny = SearchIndex.build([{"id": "a", "text": "Building permits are kept ten years."}])
        with pytest.raises(InputError, match="another run is building"): tiny.save(tmp_path / "ixc")
    assert not (tmp_path / "ixc").exists() and not (tmp_path / "ixc.lock").exists()


@pytest.mark.timeout(120)
def test_cc_two_concurrent_builds_never_both_succeed(corpus, tmp_path):
    "Two processes at once (a raw `Popen` each: `run_cli` waits for its command); not in the fast tier (~20 s)."
    rev = tmp_path / "corpus_rev.jsonl"
    write_jsonl(read_jsonl(corpus)[::-1], rev)
    procs = [subprocess.Popen([sys.executable, "-c", CLI_CODE, "search", "--corpus_file", str(c), "--index_dir",
                               str(tmp_path / "ixc"), "permits"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in (corpus, rev)]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    ok = [i for i, (rc, _, _) in enumerate(outs) if rc == 0]
    assert len(ok) == 1, outs  # the other: refused while building, or told the index holds another corpus
    rc, _, err = outs[1 - ok[0]]
    assert rc == 2 and "Traceback" not in err and ("another run is building" in err or "holds another corpus" in err), err
    built = SearchIndex.load(tmp_path / "ixc")
    winner = SearchIndex.build([corpus, rev][ok[0]], bm25=False)
    assert built.manifest["corpus_fingerprint"] == winner.manifest["corpus_fingerprint"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ixc")] == []  # no temporary folder left


WRITER = """
import sys, time
from archivesrag.search import SearchIndex
a, b, folder, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ia, ib = SearchIndex.load(a), SearchIndex.load(b)
end, n = time.time() + seconds, 0
while time.time() < end:
    (ia if n % 2 == 0 else ib).save(folder); n += 1
print(n)
"""


@pytest.mark.timeout(180)
def test_api_rb_a_reader_never_sees_a_mix_of_two_saves(corpus, index_dir, tmp_path):
    "A writer process saving for 12 s while this one reads: not in the fast tier."
    rev = tmp_path / "rev"
    passages = load_passages(corpus)
    SearchIndex.build(passages.select(range(len(passages) - 1, -1, -1))).save(rev)  # same passages, reversed
    shared = tmp_path / "ixs"
    shutil.copytree(index_dir, shared)
    log = tmp_path / "writer.log"  # a file, not a pipe: progress bars would fill a pipe nobody reads, and block
    with open(log, "w") as err:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(index_dir), str(rev), str(shared), "12"],
                                  stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    loads, busy, deadline = 0, 0, time.time() + 240
    while writer.poll() is None:
        assert time.time() < deadline, "the writer did not finish within 240 s"
        try: ix = SearchIndex.load(shared)
        except InputError as e:  # only the clean refusal after repeated swaps is allowed, never damage
            assert "replaced this index" in str(e), e; busy += 1; continue
        first = np.asarray(ix.dataset[0]["embeddings"], dtype=np.float32)
        assert np.allclose(ix.faiss_index.reconstruct(0), first, atol=1e-6)  # faiss and dataset of one save
        assert ix.manifest["corpus_fingerprint"] == corpus_fingerprint(ix.dataset["text"])
        assert ix.bm25.scores["num_docs"] == len(ix)
        loads += 1
    out, _ = writer.communicate()
    assert writer.returncode == 0, log.read_text()[-2000:]
    assert int(out.split()[-1]) >= 4 and loads >= 3 and busy <= loads, (out, loads, busy)


# ---- API06-API11: search arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, says", [(dict(k=0), "k must be a whole number of at least 1, got 0"),
                                          (dict(k=-2), "k must be a whole number of at least 1, got -2"),
                                          (dict(k=2.5), "k must be a whole number"),
                                          (dict(depth=0), "depth must be a whole number of at least 1, got 0"),
                                          (dict(query=12345), "the query must be a string or a list of strings, got int"),
                                          (dict(query=None), "the query must be a string or a list of strings, got NoneType")])
@pytest.mark.fast
def test_api06_api11_search_arguments(index, kwargs, says):
    kwargs = {"query": "permits", **kwargs}
    with pytest.raises(InputError) as e: index.search(**kwargs)
    assert says in str(e.value)
    with pytest.raises(InputError): index.retriever.search(kwargs.pop("query"), **kwargs)


@pytest.mark.fast
def test_own_probes_search(index, index_dir, tmp_path):
    with pytest.raises(InputError, match="none of the 1 passages has a word BM25 indexes"):
        SearchIndex.build([{"id": "a", "text": "x y z"}])  # single letters only: bm25s crashed on its empty vocabulary
    assert len(index.search("permits", k=10000)) == len(index) == 29  # more than there are: all of them
    assert index.search("x" * 100_000, k=3)  # a 100,000-character query: the model reads its start
    with pytest.raises(InputError, match="empty"): index.search(" \t\n ")
    r = run_cli("search", "--index_dir", index_dir, "--k", "10000", "--json", "permits", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 29, r.stderr[-2000:]
    refused(run_cli("search", "--index_dir", tmp_path / "nothing", "--retrieval", "bogus", "permits", cwd=tmp_path),
            "--retrieval must be one of hybrid, dense, bm25, not 'bogus'")
    refused(run_cli("search", "--index_dir", index_dir, "--k", "-3", "permits", cwd=tmp_path), "--k must be")
    refused(run_cli("search", "--index_dir", index_dir, "   ", cwd=tmp_path), "the query is empty")


# ---- A03, API15, API16: `ask` never calls the LLM without passages -------------------------------------------------------

class NoLLM:
    "An LLM that fails the test if `answer` asks it anything."
    name = "no-llm"
    def chat(self, *a, **kw): raise AssertionError("the LLM was called")


@pytest.mark.parametrize("kwargs, says", [(dict(k=0), "k must be a whole number of at least 1, got 0"),
                                          (dict(k=-1), "k must be a whole number of at least 1, got -1"),
                                          (dict(min_score=math.nan), "min_score must be a cosine score between -1 and 1, got nan"),
                                          (dict(min_score=2), "min_score must be a cosine score between -1 and 1, got 2")])
@pytest.mark.fast
def test_api15_api16_answer_refuses_bad_settings(index, kwargs, says):
    with pytest.raises(InputError) as e: answer("How long are building permit files kept?", index, llm=NoLLM(), **kwargs)
    assert says in str(e.value)


@pytest.mark.fast
def test_answer_without_a_passage_does_not_call_the_llm(index):
    res = answer("zzzqqq xyzzy", index, llm=NoLLM(), retrieval="bm25", min_score=-1)  # BM25 finds nothing at all
    assert res["answer"] == NO_PASSAGE.format(retrieval="bm25") and res["grounded"] is False and res["passages"] == []


@pytest.mark.fast
@pytest.mark.parametrize("value", ["nan", "2", "-1.5"])
def test_a03_ask_min_score_out_of_range_is_refused(index_dir, tmp_path, value):
    r = run_cli("ask", "--index_dir", index_dir, "--base_url", "http://127.0.0.1:9/v1", "--model", "none",
                "--min_score", value, "How long are building permit files kept?", cwd=tmp_path)
    refused(r, "--min_score must be a cosine score between -1 and 1")


@pytest.mark.fast
def test_ask_bm25_without_a_match_says_no_passage(index_dir, tmp_path):
    r = run_cli("ask", "--index_dir", index_dir, "--base_url", "http://127.0.0.1:9/v1", "--model", "none",
                "--retrieval", "bm25", "--min_score", "-1", "zzzqqq xyzzy", cwd=tmp_path)
    assert r.returncode == 0 and "could not find any passage" in r.stdout and "Passages: none found" in r.stdout, r.stderr


@pytest.mark.fast
def test_api12_format_prompt_with_text_none_names_the_passage():
    from archivesrag.rag import format_prompt
    with pytest.raises(InputError, match=r"passage 1 \(a#0\): 'text' must be a string, not NoneType"):
        format_prompt("What is kept?", [{"id": "a#0", "text": None}])
