"""Text views (00c_retrieval, 04_evaluation, 05_search): what BM25 and the embedder read for an archival component —
its own title + text, or breadcrumb + title + text — chosen per index on held-out queries and kept in the manifest.

Real parts only: the EAD fixtures under archivesrag/data/archives/ead, the bundled MiniLM, faiss, bm25s, ranx, the
CISI files in ../shared/datasets/cisi (the CISI test skips when they are absent)."""
import json
from pathlib import Path

import pytest

from archivesrag.corpus import corpus_fingerprint, load_corpus, save_corpus
from archivesrag.evaluation import choose_text_view, evaluate, find_cisi, load_glasgow, text_view_line, tuned_text_view
from archivesrag.retrieval import (NO_BREADCRUMBS, NO_HELD_OUT_QUERIES, TEXT_VIEWS, default_text_view, field_text,
                                   has_breadcrumbs, passage_text, passage_texts)
from archivesrag.search import SearchIndex, default_index, set_text_view
from helpers import run_cli

EAD = Path(__file__).resolve().parents[1] / "archivesrag" / "data" / "archives" / "ead"
NESTED = EAD / "arclight" / "sample" / "deeply-nested-components.xml"  # Interlochen: 39 components, 10 levels deep
HARBOUR = EAD / "written" / "harbour-board-ead3.xml"
RADIO = ("Interlochen Center for The Arts records > Chronological > Subject Files > Maddy > Broadcasting > "
         "University of Michigan radio > Program materials > Band & gen'l instrument lessons")

# Researchers' questions about components of the Interlochen fixture that name where the component sits: the
# component's own text is a bare title ("Correspondence", "Scripts"), often the same title in several places.
QUERIES = {  # (title, last breadcrumb title) -> query
    ("Correspondence", "1935-1936"): "correspondence about the 1935-1936 band instrument lessons on the radio",
    ("Correspondence", "February and March"): "February and March band lesson broadcasts: correspondence",
    ("Scripts", "1935-1936"): "scripts of the 1935-1936 radio band lessons",
    ("Announcements and scripts", "February and March"): "announcements for the February and March band lessons",
    ("Listener", "General"): "letters from listeners about the NBC production of the band lessons",
    ("History", "University of Michigan radio"): "history of the University of Michigan radio broadcasts",
    ("Papers", "General"): "general papers about University of Michigan radio",
    ("Survey of participating schools", "February and March"): "schools taking part in the February and March lessons",
    ("Instruction book orders", "1935-1936"): "orders for instruction books for the 1935-1936 band lessons",
    ("Card index", "Subject Files"): "card index to the Interlochen subject files",
    ("Production (mainly NBC)", "Correspondence"): "NBC production correspondence for the 1935-1936 lessons",
    ("Network plans for \"Musical Youth\"", "1935-1936"): "network plans for the Musical Youth radio programme",
}


@pytest.fixture(scope="module")
def nested():
    return load_corpus(NESTED, verbose=False)


def component(ds, title: str, parent: str) -> str:
    "The id of the one component of `ds` with this title under this parent."
    found = [r["id"] for r in ds if r["title"] == title and (r["breadcrumb"] or [""])[-1] == parent]
    assert len(found) == 1, (title, parent, found)
    return found[0]


# ---- model-free ----------------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_breadcrumb_renders_as_titles():
    rec = {"breadcrumb": ["Alpha Omega Alpha Archives", "Series I: Administrative Records", ""],
           "title": "Box 3, Folder 2: Correspondence", "text": "Letters to chapter councillors."}
    assert field_text(rec["breadcrumb"]) == "Alpha Omega Alpha Archives > Series I: Administrative Records"
    assert passage_text(rec, "breadcrumb") == ("Alpha Omega Alpha Archives > Series I: Administrative Records\n"
                                               "Box 3, Folder 2: Correspondence\nLetters to chapter councillors.")
    assert passage_text(rec, ("breadcrumb", "title")) == passage_text(rec, "breadcrumb").rsplit("\n", 1)[0]
    assert "[" not in passage_text(rec, TEXT_VIEWS["breadcrumb"])  # never a Python list
    assert passage_text(rec) == passage_text(rec, "own") == "Box 3, Folder 2: Correspondence\nLetters to chapter councillors."
    assert passage_text({**rec, "breadcrumb": []}, "breadcrumb") == passage_text(rec, "own")  # a top-level record


@pytest.mark.fast
def test_both_views_read_the_ead_fixture_as_expected():
    ds = load_corpus(HARBOUR, verbose=False)
    rec = next(r for r in ds if r["title"] == "Admiralty letters")
    own = "Admiralty letters\n" + rec["text"]
    assert rec["breadcrumb"] == ["Records of the Northport Harbour Board", "Correspondence"]
    assert rec["text"].startswith("Letters on the wartime boom")
    texts = {v: dict(zip(ds["id"], passage_texts(ds, v))) for v in TEXT_VIEWS}
    assert texts["own"][rec["id"]] == own
    assert texts["breadcrumb"][rec["id"]] == "Records of the Northport Harbour Board > Correspondence\n" + own
    top = next(r for r in ds if not r["breadcrumb"])  # the fonds: nothing above it, the same text in both views
    assert texts["breadcrumb"][top["id"]] == texts["own"][top["id"]]
    # a Dataset (read column by column) and a list of dicts read the same
    assert passage_texts(list(ds), "breadcrumb") == passage_texts(ds, "breadcrumb")
    assert has_breadcrumbs(ds) and default_text_view(ds) == ("own", NO_HELD_OUT_QUERIES)


@pytest.mark.fast
def test_a_corpus_without_breadcrumbs_gets_own(tmp_path):
    plain = [{"id": "a", "title": "Permit", "text": "Building permits, 1962."}, {"id": "b", "title": "", "text": "Minutes."}]
    assert not has_breadcrumbs(plain) and not has_breadcrumbs([{**plain[0], "breadcrumb": []}])
    assert default_text_view(plain, "breadcrumb") == ("own", NO_BREADCRUMBS)
    # nothing to choose between: no model is loaded, no query is ranked
    assert choose_text_view(plain, "no-such-model", {"q": "permits"}, {"q": {"a": 1}}) == ("own", NO_BREADCRUMBS)
    assert passage_texts(plain, "breadcrumb") == passage_texts(plain, "own") == ["Permit\nBuilding permits, 1962.", "Minutes."]
    assert text_view_line("own", NO_BREADCRUMBS) == "text view: own (no breadcrumbs in this corpus)"


@pytest.mark.fast
def test_cisi_reads_own_and_its_texts_are_unchanged():
    folder = find_cisi()
    if folder is None: pytest.skip("CISI not found: put CISI.ALL/QRY/REL in ../shared/datasets/cisi or set ARCHIVESRAG_CISI")
    corpus, queries, qrels = load_glasgow(folder)
    assert choose_text_view(corpus, None, queries, qrels) == ("own", NO_BREADCRUMBS)
    before = ["\n".join(str(x) for x in (t, w) if x) for t, w in zip(corpus["title"], corpus["text"])]  # the old join
    assert passage_texts(corpus) == passage_texts(corpus, "own") == passage_texts(corpus, "breadcrumb") == before


@pytest.mark.fast
def test_choice_on_held_out_queries_bm25_only(nested):
    # BM25 alone (model "bm25"): nothing is embedded; the questions name the series, the components do not
    qs = {f"q{n}": q for n, q in enumerate(QUERIES.values())}
    qrels = {f"q{n}": {component(nested, *key): 1} for n, key in enumerate(QUERIES)}
    view, why = choose_text_view(nested, "bm25", qs, qrels, source="test")
    assert view == "breadcrumb" and why["chosen"] == "breadcrumb" and why["queries"] == len(QUERIES)
    assert why["scores"]["breadcrumb"] > why["scores"]["own"]
    d = why["breadcrumb_minus_own"]
    assert d["low"] <= d["diff"] <= d["high"] and why["within_noise"] == (d["low"] <= 0 <= d["high"])
    assert "held-out queries [test]" in text_view_line(view, why)
    assert choose_text_view(nested, "bm25", qs, qrels, qids=["q0"]) == ("own", NO_HELD_OUT_QUERIES)  # one is not enough


# ---- with the bundled MiniLM ---------------------------------------------------------------------------------------

def test_manifest_records_the_view_and_where_it_came_from(tmp_path):
    ds = load_corpus(HARBOUR, verbose=False)
    chosen = {"chosen": "breadcrumb", "queries": 12, "scores": {"own": 0.5, "breadcrumb": 0.6}}
    index = SearchIndex.build(ds, text_view="breadcrumb", text_view_from=chosen)
    folder = index.save(tmp_path / "ix")
    m = json.loads((folder / "manifest.json").read_text())
    assert m["text_view"] == "breadcrumb" and m["text_view_from"] == chosen
    assert m["text_fields"] == ["breadcrumb", "title", "text"]
    # what the index embedded and BM25 indexed is what evaluation reads in that view
    assert m["texts_fingerprint"] == corpus_fingerprint(passage_texts(ds, "breadcrumb"))
    assert SearchIndex.load(folder).text_view == "breadcrumb"
    auto = SearchIndex.build(ds).manifest  # no held-out queries here: own, and why
    assert (auto["text_view"], auto["text_view_from"], auto["text_fields"]) == ("own", NO_HELD_OUT_QUERIES, ["title", "text"])
    old = SearchIndex.build(ds, text_fields=("text",)).manifest  # the old API still works
    assert old["text_fields"] == ["text"] and old["text_view"] is None
    plain = tmp_path / "plain.jsonl"
    save_corpus(ds.remove_columns(["breadcrumb"]), plain)
    m = SearchIndex.build(plain, text_view="breadcrumb").manifest
    assert (m["text_view"], m["text_view_from"]) == ("own", NO_BREADCRUMBS)


def test_an_index_searches_with_its_view(nested, tmp_path):
    query = QUERIES[("Correspondence", "1935-1936")]
    want = component(nested, "Correspondence", "1935-1936")
    crumbs = SearchIndex.build(nested, text_view="breadcrumb")
    own = SearchIndex.build(nested, text_view="own")
    assert crumbs.search(query, k=1)[0]["id"] == want
    assert own.search(query, k=1)[0]["id"] != want  # in its own words it is one of two bare "Correspondence"
    again = SearchIndex.load(crumbs.save(tmp_path / "crumbs"))  # a reloaded index reads as it was built
    assert again.search(query, k=1)[0]["id"] == want
    # the command line builds a new index in the view asked for, and refuses another view for it later
    r = run_cli("search", "--corpus_file", NESTED, "--index_dir", tmp_path / "cli", "--text_view", "breadcrumb",
                "--k", "1", "--json", query)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["id"] == want
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["text_view"] == "breadcrumb"
    r = run_cli("search", "--index_dir", tmp_path / "cli", "--text_view", "own", query)
    assert r.returncode == 2 and "reads its passages as 'breadcrumb'" in r.stderr
    r = run_cli("search", "--index_dir", tmp_path / "cli", "--text_view", "crumbs", query)
    assert r.returncode == 2 and "--text_view must be one of auto, own, breadcrumb" in r.stderr
    assert default_index(index_dir=tmp_path / "cli", verbose=False).text_view == "breadcrumb"


def test_evaluate_chooses_on_validation_queries_and_rebuilds_the_index(nested, tmp_path):
    # an archive run's files: corpus.jsonl, queries.jsonl, a split whose validation part holds half the queries
    corpus = tmp_path / "corpus.jsonl"
    save_corpus(nested, corpus)
    ids = [component(nested, *key) for key in QUERIES]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"id": i, "query": q}) + "\n"
                                                    for i, q in zip(ids, QUERIES.values())))
    val, test = ids[::2], ids[1::2]
    (tmp_path / "split.json").write_text(json.dumps({"by": "doc_id", "seed": 0, "val_ids": val, "test_ids": test,
                                                     "train_ids": [i for i in nested["id"] if i not in ids]}))
    SearchIndex.build(corpus, text_view="own").save(tmp_path / "index")  # built before any choice: own
    res = evaluate(corpus_file=corpus, queries_file=tmp_path / "queries.jsonl", split_file=tmp_path / "split.json",
                   output_dir=tmp_path / "eval", index_dir=tmp_path / "index", plots=False, verbose=False)
    why = res["text_view_from"]
    assert res["text_view"] == why["chosen"] and why["queries"] == len(val) and why["system"] == "base"
    assert set(why["scores"]) == set(TEXT_VIEWS) and res["n_queries"] == len(test)
    both = res["text_views"]  # both views reported on the test half, with the interval of their difference
    assert both["system"] == "base+BM25" and set(both["own"]["systems"]) == set(res["systems"])
    assert both[res["text_view"]]["systems"] == res["systems"]
    assert both["breadcrumb_minus_own"]["low"] <= both["breadcrumb_minus_own"]["diff"] <= both["breadcrumb_minus_own"]["high"]
    m = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert m["text_view"] == res["text_view"] and m["text_view_from"] == why  # rebuilt if the choice was breadcrumb
    assert m["fusion_weight"] == res["fusion_weight"]["base"] and m["fusion_weight_from"]["system"] == "base"
    assert m["texts_fingerprint"] == corpus_fingerprint(passage_texts(nested, res["text_view"]))
    assert tuned_text_view(tmp_path / "eval" / "metrics.json") == (res["text_view"], why)
    # the view an index is given by hand can be set again; the other view rebuilds it from its corpus file
    other = next(v for v in TEXT_VIEWS if v != res["text_view"])
    assert set_text_view(tmp_path / "index", other, "given", verbose=False)["text_view"] == other
    assert SearchIndex.load(tmp_path / "index").manifest["texts_fingerprint"] == corpus_fingerprint(passage_texts(nested, other))
