"""Hard-negative mining (archivesrag.negatives) on a slice of the sample archive, with the bundled MiniLM and real faiss."""
import json

import numpy as np
import pytest
from helpers import run_cli

from archivesrag.core import InputError, read_jsonl, write_jsonl
from archivesrag.corpus import load_sample, save_corpus
from archivesrag.negatives import _key, load_training_records, mine_hard_negatives, parse_range, pool_from_passages
from archivesrag.splits import held_out_ids, load_split, save_split, split_by_document
from archivesrag.retrieval import embedding_cache_path, encode_cached
from archivesrag.models import resolve_embedder
from archivesrag.cli import main

N_PASSAGES = 60
RANGE, NEG = "2-200", 15


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "A slice of the sample archive as corpus.jsonl and query.jsonl (bundled synthetic queries, else titles), and a cache."
    d = tmp_path_factory.mktemp("negatives")
    corpus = load_sample(verbose=False).select(range(N_PASSAGES))
    try:
        from archivesrag.queries import load_sample_queries
        keep = set(corpus["id"])
        queries = [q for q in load_sample_queries() if q["id"] in keep]
    except (ImportError, FileNotFoundError, InputError):
        queries = []
    if len(queries) < 40:  # too few bundled queries for this slice: titles stand in
        queries = [{"id": p["id"], "query": p["title"], "positive": [p["text"]], "doc_id": p["doc_id"]} for p in corpus]
    save_corpus(corpus, d / "corpus.jsonl")
    write_jsonl(queries, d / "query.jsonl")
    cache = d / "cache" / "embeddings"  # where $ARCHIVESRAG_CACHE=<d>/cache keeps embeddings (core.cache_dir)
    summary = mine_hard_negatives(d / "query.jsonl", d / "minedHN.jsonl", range_for_sampling=RANGE,
                                  negative_number=NEG, seed=42, cache_dir=cache)
    return {"dir": d, "cache": cache, "summary": summary, "mined": read_jsonl(d / "minedHN.jsonl"),
            "queries": queries, "corpus": corpus}


def test_every_line_has_negative_number_or_is_counted_short(data):
    mined, s = data["mined"], data["summary"]
    assert s["written"] == len(mined) > 0
    assert all(0 < len(r["neg"]) <= NEG for r in mined)
    assert sum(len(r["neg"]) < NEG for r in mined) == s["short"]
    assert s["written"] + s["skipped_no_negative"] == s["records"] == len(data["queries"])
    for r in mined:
        assert set(r) >= {"id", "query", "pos", "neg", "neg_ids", "neg_scores", "neg_ranks", "pos_score"}
        assert len(r["neg"]) == len(r["neg_ids"]) == len(r["neg_scores"]) == len(r["neg_ranks"])
        assert len(set(r["neg_ids"])) == len(r["neg_ids"])


def test_no_negative_is_the_positive_or_the_query(data):
    for r in data["mined"]:
        assert r["id"] not in r["neg_ids"]
        negs = {_key(n) for n in r["neg"]}
        assert not negs & {_key(p) for p in r["pos"]}
        assert _key(r["query"]) not in negs


def test_ranks_inside_range_and_scores_below_margin(data):
    lo, hi = parse_range(RANGE)
    for r in data["mined"]:
        assert all(lo <= k <= hi for k in r["neg_ranks"]) and r["neg_ranks"] == sorted(r["neg_ranks"])
        assert all(s <= r["pos_score"] - abs(r["pos_score"]) * 0.05 + 1e-6 for s in r["neg_scores"])


def test_same_seed_same_file_and_second_run_hits_cache(data, capsys):
    d = data["dir"]
    capsys.readouterr()
    mine_hard_negatives(d / "query.jsonl", d / "again.jsonl", range_for_sampling=RANGE, negative_number=NEG,
                        seed=42, cache_dir=data["cache"])
    out = capsys.readouterr().out
    assert "encoding" not in out  # every embedding came from the cache (a hit is said only when asked: verbose)
    assert (d / "again.jsonl").read_bytes() == (d / "minedHN.jsonl").read_bytes()
    mine_hard_negatives(d / "query.jsonl", d / "seed7.jsonl", range_for_sampling=RANGE, negative_number=NEG,
                        seed=7, cache_dir=data["cache"])
    assert (d / "seed7.jsonl").read_bytes() != (d / "minedHN.jsonl").read_bytes()


def test_short_queries_are_counted_not_padded(data):
    d = data["dir"]
    s = mine_hard_negatives(d / "query.jsonl", d / "short.jsonl", range_for_sampling="2-6", negative_number=NEG,
                            cache_dir=data["cache"])
    mined = read_jsonl(d / "short.jsonl")
    assert s["short"] == len(mined) > 0  # at most 5 candidates in ranks 2-6, never 15
    assert all(len(r["neg"]) <= 5 and all(2 <= k <= 6 for k in r["neg_ranks"]) for r in mined)


def test_margin_off_drops_nothing(data):
    d = data["dir"]
    s = mine_hard_negatives(d / "query.jsonl", d / "loose.jsonl", relative_margin=0, cache_dir=data["cache"])
    assert s["dropped_margin"] == 0 and data["summary"]["dropped_margin"] > 0


def test_positive_excluded_by_id_when_its_text_differs(data):
    "The query record carries a shortened positive (as in the seed's example): the full passage, same id, is never a negative."
    d = data["dir"]
    recs = [{**q, "positive": [q["positive"][0][:120]]} for q in data["queries"]]
    write_jsonl(recs, d / "short_pos.jsonl")
    s = mine_hard_negatives(d / "short_pos.jsonl", d / "by_id.jsonl", candidate_pool=d / "corpus.jsonl",
                            negative_number=NEG, cache_dir=data["cache"])
    mined = read_jsonl(d / "by_id.jsonl")
    assert s["candidate_pool"].endswith("corpus.jsonl") and s["pool_size"] == N_PASSAGES
    assert all(r["id"] not in r["neg_ids"] for r in mined)
    assert s["excluded_positive_or_query"] > 0


def test_flagembedding_input_without_ids_excludes_positive_by_text(data):
    d = data["dir"]
    flag = [{"query": r["query"], "pos": r["pos"], "neg": r["neg"][:2]} for r in data["mined"]]
    write_jsonl(flag, d / "flag.jsonl")
    recs, _ = load_training_records(d / "flag.jsonl")
    assert recs[0]["id"] == "flag-1"
    s = mine_hard_negatives(d / "flag.jsonl", d / "flag_mined.jsonl", candidate_pool=d / "corpus.jsonl",
                            negative_number=NEG, cache_dir=data["cache"])
    mined = read_jsonl(d / "flag_mined.jsonl")
    assert s["written"] == len(mined) > 0
    for r in mined:  # corpus ids never match "flag-N", so only the text check can have kept the positive out
        assert not {_key(n) for n in r["neg"]} & {_key(p) for p in r["pos"]}


def test_round_trip_keeps_only_examples_whose_positive_is_top1(data):
    d = data["dir"]
    s = mine_hard_negatives(d / "query.jsonl", d / "rt.jsonl", round_trip_k=1, cache_dir=data["cache"])
    assert s["dropped_round_trip"] > 0
    assert s["written"] + s["dropped_round_trip"] + s["skipped_no_negative"] == s["records"]
    # check against a NumPy brute-force search over the same cached embeddings
    texts = list(dict.fromkeys(q["positive"][0] for q in data["queries"]))
    P = encode_cached(None, texts, cache_dir=data["cache"])
    kept = read_jsonl(d / "rt.jsonl")
    Qv = encode_cached(None, [r["query"] for r in kept], cache_dir=data["cache"])
    for r, q in zip(kept, Qv):
        scores = P @ q
        assert texts[int(np.argmax(scores))] == r["pos"][0]


@pytest.mark.fast
def test_encode_cached_normalised_keyed_by_prompt_and_recovers_from_damage(tmp_path, capsys):
    texts = ["Retention schedule for payroll records", "Fixity check failed on digitised maps"]
    a = encode_cached(None, texts, cache_dir=tmp_path)
    assert a.dtype == np.float32 and a.shape == (2, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    f = embedding_cache_path(resolve_embedder(None), texts, tmp_path)
    assert f.exists() and f != embedding_cache_path(resolve_embedder(None), texts, tmp_path, prompt="query: ")
    b = encode_cached(None, texts, cache_dir=tmp_path, prompt="query: ")
    assert not np.allclose(a, b)
    f.write_bytes(b"not a numpy file")
    capsys.readouterr()
    c = encode_cached(None, texts, cache_dir=tmp_path)
    assert "encoding 2 texts" in capsys.readouterr().out and np.allclose(a, c, atol=1e-6)


@pytest.mark.fast
def test_bad_input_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "query": "q", "positive": ["p"]}\n{"id": "b", "positive": ["p"]}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: record has no 'query'"):
        load_training_records(bad)
    (tmp_path / "bad2.jsonl").write_text('{"query": "q", "pos": "p"}\n{"query": "q", "pos": [1, 2]}\n')
    with pytest.raises(InputError, match=r"bad2.jsonl:2: 'pos' must be a list of strings"):
        load_training_records(tmp_path / "bad2.jsonl")
    with pytest.raises(InputError, match="expected two ranks"):
        parse_range("2_200")
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "x", "body": "no text field"}\n')
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"id": "a", "query": "q", "positive": ["p"]}\n')
    with pytest.raises(InputError, match=r"pool.jsonl:1: record has no 'text'"):
        mine_hard_negatives(ok, tmp_path / "out.jsonl", candidate_pool=pool, cache_dir=tmp_path)


@pytest.mark.fast
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "query": "q", "positive": ["p"]}\n{"id": "b", "query": 3, "positive": ["p"]}\n')
    assert main(["mine-hn", "--input_file", str(bad), "--output_file", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.jsonl:2: 'query' must be a string" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_seed_command_line_as_written(data, monkeypatch):
    "The seed's `mine_hn.py` command, run as `archivesrag mine-hn` (offline, as conftest sets): MiniLM stands in."
    d = data["dir"]
    monkeypatch.setenv("ARCHIVESRAG_CACHE", str(data["cache"].parent))
    p = run_cli("mine-hn", "--model_name_or_path", "BAAI/bge-base-en-v1.5", "--input_file", "query.jsonl",
                "--output_file", "query_minedHN.jsonl", "--range_for_sampling", "2-200", "--negative_number", "15",
                "--use_gpu_for_searching", cwd=d)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "offline: using the bundled all-MiniLM-L6-v2 instead of BAAI/bge-base-en-v1.5" in p.stdout
    assert "--use_gpu_for_searching:" in p.stdout and "encoding" not in p.stdout  # the embeddings came from the cache
    assert (d / "query_minedHN.jsonl").read_bytes() == (d / "minedHN.jsonl").read_bytes()
    lines = [json.loads(x) for x in (d / "query_minedHN.jsonl").read_text().splitlines()]
    assert all({"query", "pos", "neg"} <= set(r) for r in lines)


@pytest.mark.fast
def test_pool_through_load_passages_counts_skips(tmp_path):
    write_jsonl([{"id": "a", "text": "Payroll records: 7 years."}, {"id": "b", "text": "payroll records:   7 YEARS."},
                 {"id": "c", "text": "  "}, {"id": "d", "text": "Maps: permanent."}], tmp_path / "pool.jsonl")
    ids, texts, report = pool_from_passages(tmp_path / "pool.jsonl", exclude_ids={"d"})
    assert ids == ["a"] and report == {"skipped_duplicate_text": 1, "skipped_empty_text": 1, "pool_held_out": 1}


def test_split_file_keeps_held_out_passages_out_of_mining(data, tmp_path):
    split = split_by_document(data["corpus"], test_size=0.3, seed=3)
    save_split(split, tmp_path / "split.json")
    held = held_out_ids(load_split(tmp_path / "split.json"))
    s = mine_hard_negatives(data["dir"] / "query.jsonl", tmp_path / "mined.jsonl", candidate_pool=data["dir"] / "corpus.jsonl",
                            split_file=tmp_path / "split.json", cache_dir=data["cache"])
    mined = read_jsonl(tmp_path / "mined.jsonl")
    assert mined and not {r["id"] for r in mined} & held
    assert not {n for r in mined for n in r["neg_ids"]} & held
    assert s["skipped_held_out_query"] == sum(q["id"] in held for q in data["queries"])
    assert s["pool_held_out"] == len(held) and s["pool_size"] == len(data["corpus"]) - len(held)


def test_sample_run_is_one_lineage(data, tmp_path):
    "make_sample_run writes 02's folder with MINING_SETTINGS; sample_run_ready accepts it and refuses stale or partial ones."
    import json
    from archivesrag.negatives import MINING_SETTINGS, SAMPLE_RUN_FILES, make_sample_run, sample_run_ready
    assert MINING_SETTINGS["range_for_sampling"] == "2-200" and MINING_SETTINGS["negative_number"] == 15
    run = tmp_path / "sample"
    summary = make_sample_run(run, data["corpus"], data["queries"], model_name_or_path="minilm", cache_dir=data["cache"])
    assert all((run / f).exists() for f in SAMPLE_RUN_FILES) and sample_run_ready(run)
    assert summary["range_for_sampling"] == "2-200" and summary["candidate_pool"].endswith("corpus.jsonl")
    held = held_out_ids(load_split(run / "split.json"))
    mined = read_jsonl(run / "minedHN.jsonl")
    assert mined and not {r["id"] for r in mined} & held and not {n for r in mined for n in r["neg_ids"]} & held
    done = json.loads((run / "mining.json").read_text())
    (run / "mining.json").write_text(json.dumps({**done, "negative_number": 7}))  # an older run's settings
    assert not sample_run_ready(run)
    (run / "mining.json").unlink()                                             # a run cut short
    assert not sample_run_ready(run) and not sample_run_ready(tmp_path / "nothing")
