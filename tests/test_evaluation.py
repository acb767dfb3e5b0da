"""Evaluation (nbs/04_evaluation): split, Glasgow/CISI loader, BM25, dense, fusion, metrics, `archivesrag evaluate`.

Real parts only: the bundled MiniLM, bm25s, faiss, ranx, the CISI files in ../shared/datasets/cisi (tests that need
them skip when the folder is absent; set ARCHIVESRAG_CISI to point elsewhere)."""
import json
from pathlib import Path

import pytest
from helpers import run_cli

from archivesrag.core import InputError
from archivesrag.corpus import load_sample
from archivesrag.evaluation import (bm25_run, collection_set, evaluate, evaluate_systems, queries_from_records, system_runs,
                                    tuning_half)
from archivesrag.glasgow import find_cisi, load_glasgow, read_glasgow_qrels, read_glasgow_records, subsample_collection
from archivesrag.metrics import METRICS, evaluate_runs
from archivesrag.models import bundled_embedder_path
from archivesrag.cli import main
from archivesrag.splits import load_split, save_split, select_queries, split_by_document
from archivesrag.queries import load_sample_queries
from archivesrag.retrieval import BM25, bm25_search, build_bm25, passage_texts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus():
    return load_sample(verbose=False)


@pytest.fixture(scope="module")
def cisi():
    folder = find_cisi()
    if folder is None:
        pytest.skip("CISI not found: put CISI.ALL/QRY/REL in ../shared/datasets/cisi or set ARCHIVESRAG_CISI")
    return load_glasgow(folder)


@pytest.fixture(scope="module")
def sample_eval(corpus):
    "Held-out sample-archive queries (bundled synthetic queries, else titles) with their qrels."
    records = list(load_sample_queries())
    have = {r["id"] for r in records}  # passages without a bundled query get their title as the query
    records += [{"id": i, "query": t} for i, t in zip(corpus["id"], corpus["title"]) if i not in have]
    split = split_by_document(corpus, seed=42)
    queries, qrels, report = queries_from_records(select_queries(records, split["test_ids"]), corpus)
    assert report["queries"] == len(queries) == len(split["test_ids"])
    return split, queries, qrels


# ---- split ---------------------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_split_keeps_each_document_on_one_side(corpus):
    split = split_by_document(corpus, test_size=0.2, seed=7)
    doc_of = dict(zip(corpus["id"], corpus["doc_id"]))
    train_docs = {doc_of[i] for i in split["train_ids"]}
    test_docs = {doc_of[i] for i in split["test_ids"]}
    assert train_docs.isdisjoint(test_docs)
    assert sorted(split["train_ids"] + split["test_ids"]) == sorted(corpus["id"])
    assert (split["seed"], split["by"], split["test_size"]) == (7, "doc_id", 0.2)
    assert (split["n_train_docs"], split["n_test_docs"]) == (len(train_docs), len(test_docs))
    assert split == split_by_document(list(corpus), test_size=0.2, seed=7)  # a Dataset or a list of dicts
    assert split["test_ids"] != split_by_document(corpus, test_size=0.2, seed=8)["test_ids"]
    three = split_by_document(corpus, test_size=0.2, val_size=0.1, seed=7)
    val_docs = {doc_of[i] for i in three["val_ids"]}
    assert val_docs and val_docs.isdisjoint(train_docs := {doc_of[i] for i in three["train_ids"]})
    assert val_docs.isdisjoint({doc_of[i] for i in three["test_ids"]})


@pytest.mark.fast
def test_split_file_round_trip_and_errors(corpus, tmp_path):
    split = split_by_document(corpus)
    assert load_split(save_split(split, tmp_path / "split.json")) == split
    (tmp_path / "overlap.json").write_text(json.dumps({"train_ids": ["a", "b"], "test_ids": ["b"]}))
    with pytest.raises(InputError, match=r"overlap.json: 1 .*id.* on two sides"):
        load_split(tmp_path / "overlap.json")
    (tmp_path / "broken.json").write_text('{"train_ids": [\n"a",\n')
    with pytest.raises(InputError, match=r"broken.json:\d+: .*malformed JSON"):
        load_split(tmp_path / "broken.json")
    with pytest.raises(InputError, match="test_size"):
        split_by_document(corpus, test_size=1.5)
    assert select_queries([{"id": "x#0", "query": "a"}, {"id": "y#0", "query": "b"}], ["y#0"]) == [{"id": "y#0", "query": "b"}]


# ---- Glasgow format / CISI ----------------------------------------------------------------------------------------

@pytest.mark.fast
def test_cisi_counts(cisi):
    corpus, queries, qrels = cisi
    assert len(corpus) == 1460
    assert len(queries) == 112
    assert len(qrels) == 76
    assert sum(len(d) for d in qrels.values()) == 3114
    first = corpus[0]
    assert first["title"] == "18 Editions of the Dewey Decimal Classifications"
    assert first["author"] == "Comaromi, J.P." and first["text"].startswith("The present study is a history of the DEWEY")
    assert queries["1"].startswith("What problems and concerns are there in making up descriptive titles?")


@pytest.mark.fast
def test_glasgow_malformed_input_names_file_and_line(tmp_path):
    (tmp_path / "X.ALL").write_text(".I 1\n.T\nTitle one\n.W\nText one.\n.I 1\n.W\nAgain.\n")
    with pytest.raises(InputError, match=r"X.ALL:6: duplicate record id 1 \(first on line 1\)"):
        read_glasgow_records(tmp_path / "X.ALL")
    (tmp_path / "Y.ALL").write_text("junk before\n.I 1\n.W\ntext\n")
    with pytest.raises(InputError, match=r"Y.ALL:1: text before the first '.I'"):
        read_glasgow_records(tmp_path / "Y.ALL")
    (tmp_path / "Z.REL").write_text("     1     28\t0\t0.000000\n oops\n")
    with pytest.raises(InputError, match=r"Z.REL:2: expected 'query-id doc-id"):
        read_glasgow_qrels(tmp_path / "Z.REL")
    # Latin-1 bytes are read, not rejected; TREC-style qrels are understood too
    (tmp_path / "L.ALL").write_bytes(".I 1\n.T\nArchives nationales du Qu\xe9bec\n.W\nFonds.\n".encode("latin-1"))
    assert read_glasgow_records(tmp_path / "L.ALL")[0]["T"] == ["Archives nationales du Qu\u00e9bec"]
    (tmp_path / "T.REL").write_text("1 0 13 1\n1 0 14 0\n")
    assert read_glasgow_qrels(tmp_path / "T.REL") == {"1": {"13": 1}}
    with pytest.raises(InputError, match="no such folder"):
        load_glasgow(tmp_path / "missing")
    with pytest.raises(InputError, match="no CISI.ALL"):
        load_glasgow(tmp_path)


def test_cisi_bm25_ndcg(cisi):
    corpus, queries, qrels = cisi
    texts = passage_texts(corpus)
    ids = list(corpus["id"])
    # the configuration the issue measured: bm25s, English stopwords, no stemmer -> 0.349
    plain = evaluate_runs(qrels, {"bm25": bm25_run(build_bm25(texts, stemmer=None), queries, ids, k=100)})
    assert 0.33 <= plain["systems"]["bm25"]["ndcg@10"] <= 0.37
    assert set(plain["systems"]["bm25"]) == set(METRICS)
    assert len(plain["per_query"]) == 76
    # our default adds the Snowball stemmer (applied to queries too): better, ~0.386
    stemmed = evaluate_runs(qrels, {"bm25": bm25_run(build_bm25(texts), queries, ids, k=100)})
    assert plain["systems"]["bm25"]["ndcg@10"] < stemmed["systems"]["bm25"]["ndcg@10"] <= 0.41


def test_minilm_and_hybrid_on_cisi(cisi):
    corpus, queries, qrels = subsample_collection(*cisi, n_queries=6, n_distractors=100)  # the notebook's small slice
    res = evaluate_systems(corpus, queries, qrels, {"BM25": "bm25", "MiniLM": str(bundled_embedder_path())},
                           tune_qids=tuning_half(qrels))
    rows = res["systems"]
    assert set(rows) == {"BM25", "MiniLM", "MiniLM+BM25", "MiniLM+BM25 RRF"}
    for name, vals in rows.items():
        assert set(vals) == set(METRICS) and all(0.0 <= v <= 1.0 for v in vals.values()), name
    assert rows["MiniLM"]["recall@100"] > 0.2  # MiniLM finds a good share of what people judged relevant
    assert res["n_queries"] + res["n_tune_queries"] == 6 and res["n_tune_queries"] == 3
    w = res["fusion"]["MiniLM+BM25"]["weights"]
    assert abs(w["MiniLM"] + w["BM25"] - 1) < 1e-6 and "tuned on 3 validation queries" in res["fusion"]["MiniLM+BM25"]["chosen"]
    assert set(res["per_query"]) == set(qrels) - set(tuning_half(qrels))  # only the reported half


# ---- BM25, dense, fusion on the sample archive ---------------------------------------------------------------------

@pytest.mark.fast
def test_bm25_save_load_keeps_the_stemmer(corpus, tmp_path):
    texts = list(corpus["text"])
    bm25 = build_bm25(texts)
    assert isinstance(bm25, BM25)
    idx, scores = bm25_search(bm25, ["retention of personnel records", "PA/AR/2017-012"], k=5)
    assert idx.shape == scores.shape == (2, 5) and scores[0, 0] >= scores[0, 1] > 0
    assert "PA/AR/2017-012" in texts[int(idx[1, 0])]
    bm25.save(tmp_path / "bm25")
    again = BM25.load(tmp_path / "bm25")
    assert (again.stopwords, again.stemmer_language) == ("en", "english")
    idx2, scores2 = bm25_search(again, ["retention of personnel records", "PA/AR/2017-012"], k=5)
    assert (idx2 == idx).all()
    assert bm25_search(bm25, ["the of and"], k=3)[1].max() == 0  # only stopwords: nothing matches, no crash
    assert bm25_search(bm25, ["records"], k=10_000)[0].shape == (1, len(texts))  # k capped at the corpus size


def test_hybrid_differs_from_both_singles(corpus, sample_eval):
    split, queries, qrels = sample_eval
    runs, fusion = system_runs(corpus, queries, {"BM25": "bm25", "MiniLM": str(bundled_embedder_path())}, k=20,
                               fusion_weight=0.5)
    top = lambda run: [tuple(list(run[q])[:10]) for q in sorted(queries)]  # runs are in rank order
    for fused in ("MiniLM+BM25", "MiniLM+BM25 RRF"):
        assert top(runs[fused]) != top(runs["MiniLM"]) and top(runs[fused]) != top(runs["BM25"]), fused
    assert fusion["MiniLM+BM25"]["depth"] == 100  # fused at the depth search fuses at
    res = evaluate_systems(corpus, queries, qrels, {"BM25": "bm25", "MiniLM": str(bundled_embedder_path())},
                           fusion_weight=0.5)
    pq = res["per_query"]
    for single in ("BM25", "MiniLM"):
        assert any(v["MiniLM+BM25"] != v[single] for v in pq.values()), single
    assert res["fusion"]["MiniLM+BM25"]["weights"] == {"MiniLM": 0.5, "BM25": 0.5} and res["fusion_weight"] == {"MiniLM": 0.5}
    assert res["text_fields"] == ["title", "text"]  # passages read as the search index reads them


def test_reference_code_query_hybrid_first(corpus):
    ids, texts = list(corpus["id"]), passage_texts(corpus)
    code = "PA/AR/2017-012"
    target = next(i for i, t in zip(ids, texts) if code in t)
    queries = {"code": code}
    runs, _ = system_runs(corpus, queries, {"MiniLM": str(bundled_embedder_path())}, k=10, fusion_weight=0.5)
    assert next(iter(runs["MiniLM+BM25"]["code"])) == target
    assert list(bm25_run(build_bm25(texts), queries, ids, k=10)["code"])[0] == target
    dense = runs["MiniLM"]["code"]
    assert list(dense.values()) == sorted(dense.values(), reverse=True)


# ---- evaluate / CLI -------------------------------------------------------------------------------------------------

def test_evaluate_with_finetuned_model_writes_metrics_plots_and_card(corpus, tmp_path):
    # The files of a pipeline run, on a 40-passage slice of the sample archive (encoding stays quick):
    # corpus.jsonl, queries.jsonl, split.json, and a "fine-tuned" model folder = the bundled MiniLM's files
    # (linked) plus a model card, as `archivesrag train` leaves it.
    from archivesrag.core import write_jsonl
    from archivesrag.corpus import save_corpus
    part = corpus.select(range(40))
    save_corpus(part, tmp_path / "corpus.jsonl")
    records = list(load_sample_queries())
    write_jsonl(select_queries(records, part["id"]), tmp_path / "queries.jsonl")
    split_file = save_split(split_by_document(part, test_size=0.3, seed=42), tmp_path / "split.json")
    model = tmp_path / "model"
    model.mkdir()
    for f in bundled_embedder_path().iterdir():
        (model / f.name).symlink_to(f)
    (model / "README.md").write_text("# model\n\nFine-tuned from all-MiniLM-L6-v2.\n")
    out = tmp_path / "eval"
    res = evaluate(model_name_or_path=str(model), corpus_file=tmp_path / "corpus.jsonl", queries_file=tmp_path / "queries.jsonl",
                   split_file=split_file, output_dir=out, verbose=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["systems"]) == {"BM25", "base", "fine-tuned", "base+BM25", "base+BM25 RRF",
                                     "fine-tuned+BM25", "fine-tuned+BM25 RRF"}
    assert saved["split"]["n_test_docs"] > 0 and saved["n_queries"] >= 2 and saved["n_tune_queries"] >= 2
    assert "validation queries" in saved["fusion"]["fine-tuned+BM25"]["chosen"]
    # the same weights in both folders: the "fine-tuned" copy scores like the base model, query by query
    assert all(abs(v["fine-tuned"] - v["base"]) < 1e-3 for v in saved["per_query"].values())
    names = {Path(p).name for p in res["plots"]}
    assert {"metrics_corpus.png", "wins_corpus.png", "best_corpus.png"} <= names
    assert all((out / "plots" / n).stat().st_size > 1000 for n in names)
    card = (model / "README.md").read_text()
    assert "Fine-tuned from all-MiniLM-L6-v2." in card and "Evaluation" in card and "ndcg@10" in card


@pytest.mark.fast
def test_cli_on_cisi_prints_the_table(cisi, capsys, tmp_path):
    rc = main(["evaluate", "--collection", f"cisi:{find_cisi()}", "--retrieval", "bm25", "--output_dir", str(tmp_path),
               "--no_plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "CISI" in out and "ndcg@10" in out and "map@100" in out and "BM25" in out
    saved = json.loads((tmp_path / "metrics_cisi.json").read_text())
    assert saved["n_queries"] == 76 and 0.37 < saved["systems"]["BM25"]["ndcg@10"] < 0.41


def test_collection_with_the_committed_query_split_reports_the_test_half(cisi, tmp_path):
    "`--split_file bench/cisi_query_split.json` scores the bench's test half: the same BM25 figure as bench.json."
    split = Path(__file__).parents[1] / "bench" / "cisi_query_split.json"
    res = evaluate(collection=f"cisi:{find_cisi()}", split_file=split, retrieval="bm25", output_dir=tmp_path,
                   plots=False, verbose=False)
    bench = json.loads((split.parent / "results" / "cisi" / "bench.json").read_text())
    assert res["dataset"] == "CISI test half" and res["n_queries"] == bench["test"]["n_queries"] == 38
    assert res["systems"]["BM25"]["ndcg@10"] == pytest.approx(bench["test"]["systems"]["BM25"]["ndcg@10"], abs=1e-4)
    halves = json.loads(split.read_text())
    tuned = collection_set(f"cisi:{find_cisi()}", split_file=split)  # hybrid: validation tunes, test is reported
    assert halves["by"] == "query" and halves["train_ids"] == []  # the one split schema, for judged queries
    assert tuned.tune == halves["val_ids"] and set(tuned.qrels) == set(halves["val_ids"]) | set(halves["test_ids"])
    for bad, why in [({"val_ids": ["2"], "test_ids": ["9999"]}, r"1 query id\(s\) are not judged in this collection, e\.g\. '9999'"),
                     ({"val_ids": ["2", "3"], "test_ids": ["3"]}, r"1 id\(s\) on two sides of the split, e\.g\. '3'"),
                     ({"val_ids": ["2"], "test_ids": []}, r"a split of judged queries has `by: query` and non-empty val_ids and test_ids")]:
        (tmp_path / "bad.json").write_text(json.dumps({"by": "query", "train_ids": [], **bad}))
        with pytest.raises(InputError, match=r"bad\.json: " + why):
            evaluate(collection=f"cisi:{find_cisi()}", split_file=tmp_path / "bad.json", retrieval="bm25", output_dir=tmp_path)


@pytest.mark.fast
def test_cli_bad_split_is_one_line_exit_2(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train_ids": ["ARC-0001#0"], "test_ids": ["ARC-0001#0"]}))
    p = run_cli("evaluate", "--split_file", tmp_path / "split.json", "--output_dir", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "on two sides" in p.stderr and "split.json" in p.stderr


def test_evaluate_chooses_what_to_serve_and_the_index_serves_it(corpus, tmp_path):
    # A pipeline run's files on a 40-passage slice, a split with a validation part, an index built with the base
    # model; a "fine-tuned" copy of MiniLM (same weights, another folder) is evaluated beside it.
    from archivesrag.core import write_jsonl
    from archivesrag.corpus import save_corpus
    from archivesrag.evaluation import build_served_index, served_choice
    from archivesrag.retrieval import model_identity
    from archivesrag.search import SearchIndex, read_manifest
    part = corpus.select(range(40))
    save_corpus(part, tmp_path / "corpus.jsonl")
    records = select_queries(list(load_sample_queries()), part["id"])
    write_jsonl(records, tmp_path / "queries.jsonl")
    split = save_split(split_by_document(part, test_size=0.3, val_size=0.3, seed=1), tmp_path / "split.json")
    model = tmp_path / "model"
    model.mkdir()
    for f in bundled_embedder_path().iterdir():
        (model / f.name).symlink_to(f)
    SearchIndex.build(tmp_path / "corpus.jsonl", model_name_or_path="minilm").save(tmp_path / "index")
    res = evaluate(model_name_or_path=str(model), base_model="minilm", corpus_file=tmp_path / "corpus.jsonl",
                   queries_file=tmp_path / "queries.jsonl", split_file=split, output_dir=tmp_path / "eval",
                   plots=False, verbose=False, index_dir=tmp_path / "index")
    s, val = res["served"], res["validation"]
    # chosen on the validation queries among the four fused rows: the best nDCG@10 there, a tie keeps the old default
    assert set(val["systems"]) == {"base+BM25", "base+BM25 RRF", "fine-tuned+BM25", "fine-tuned+BM25 RRF"}
    best = max(val["systems"].values())
    assert val["systems"][s["system"]] == best and s["served_from"]["scores"] == val["systems"]
    if val["systems"]["fine-tuned+BM25"] == best: assert s["system"] == "fine-tuned+BM25"
    assert s["fusion"] == ("rrf" if s["system"].endswith("RRF") else "wsum")
    assert s["fusion_weight"] == res["fusion_weight"][s["model_system"]]
    ci = s["served_from"]["runner_up"]
    assert s["served_from"]["within_noise"] == (ci["low"] <= 0 <= ci["high"])
    assert s["served_from"]["label"] in s["served_from"]["reading"] and "validation queries" in s["served_from"]["reading"]
    assert served_choice(tmp_path / "eval" / "metrics.json") == s
    # the index now serves it: rebuilt with the chosen model when that was not its own, the choice in its manifest
    m = read_manifest(tmp_path / "index")
    assert m["model"] == model_identity(s["model"])[0] and m["fusion"] == s["fusion"] and m["fusion_weight"] == s["fusion_weight"]
    assert m["served_from"]["reading"] == s["served_from"]["reading"] and "serving" in res["index_note"]
    if model_identity(s["model"])[0] != model_identity("minilm")[0]: assert "rebuilt" in res["index_note"]
    # and ranks as the chosen row was scored: search's hybrid ranking is the evaluated run of that system
    from archivesrag.archives import AccessPolicy
    queries, qrels, _ = queries_from_records(records[:8], part)  # every passage, as the index holds them
    runs = evaluate_systems(part, queries, qrels, {"BM25": "bm25", s["model_system"]: s["model"]}, k=10,
                            fusion_weight=s["fusion_weight"], text_fields=res["text_view"], return_runs=True)["runs"]
    index = SearchIndex.load(tmp_path / "index")
    for q, hits in zip(queries, index.search(list(queries.values()), k=10, policy=AccessPolicy("full"))):
        assert [h["id"] for h in hits] == list(runs[s["system"]][q]), q
    # build_served_index makes the same index from the metrics file; `search` says what it serves
    built = build_served_index(tmp_path / "corpus.jsonl", tmp_path / "eval" / "metrics.json", tmp_path / "served", verbose=False)
    assert {k: built[k] for k in ("model", "fusion", "fusion_weight", "text_view")} == {k: m[k] for k in ("model", "fusion", "fusion_weight", "text_view")}
    assert built["served_from"]["reading"] == s["served_from"]["reading"]
    r = run_cli("search", records[0]["query"], "--k", "2", "--index_dir", tmp_path / "served", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "serving " + s["served_from"]["reading"] in r.stderr.splitlines() and r.stdout.startswith("1. ARC-")
