"""Closed records never leave: unique markers are planted in closed, restricted-until-the-future, internal-audience and
unpublished units of the bundled test archives, and no marker may appear anywhere text leaves the package — search
output, every prompt at the one LLM boundary (`ARCHIVESRAG_PROMPT_LOG`), answers, written query files — while the
restricted and closed ones do appear at the matching clearance, or once their date has passed."""
import json

import pytest
from helpers import run_cli, written_archives_corpus

from archivesrag.archives import archives_path
from archivesrag.core import read_jsonl

# Planted in the fixtures: closed (no date, or until 2071), restricted until 2090, staff-only notes, unpublished units.
CLOSED, RESTRICTED, INTERNAL, UNPUBLISHED = "ZQX-CLOSED", "ZQX-RESTRICTED", "ZQX-INTERNAL", "ZQX-UNPUBLISHED"
NEVER = (INTERNAL, UNPUBLISHED)          # dropped at load time: for no one, ever
HIDDEN = (CLOSED, RESTRICTED) + NEVER    # hidden from the public today
AS_OF = "2026-01-01"                      # tests pass a fixed date; the CLI's default is today


def planted(text: str, markers=HIDDEN) -> list[str]:
    return [m for m in markers if m in text]


@pytest.fixture(scope="module")
def archive_corpus(tmp_path_factory):
    "The three written fixtures, loaded by `archivesrag corpus` from a folder, as a user would."
    return written_archives_corpus(tmp_path_factory.mktemp("access"))


@pytest.mark.fast
def test_internal_and_unpublished_never_reach_the_corpus(archive_corpus):
    text = archive_corpus.read_text()
    assert not planted(text, NEVER)
    assert CLOSED in text and RESTRICTED in text   # kept, with their access: the gate at query time decides
    statuses = {r["access"]["status"] for r in read_jsonl(archive_corpus)}
    assert statuses == {"open", "restricted", "closed"}


@pytest.mark.fast
def test_corpus_line_counts_levels_and_access(archive_corpus, tmp_path):
    run = run_cli("corpus", "--input_file", archives_path("ead/written/harbour-board-ead3.xml"),
                  "--output_file", tmp_path / "c.jsonl")
    assert run.returncode == 0, run.stderr
    for part in ("level:series", "access:closed", "access:restricted", "internal dropped", "unpublished dropped"):
        assert part in run.stdout, run.stdout


@pytest.mark.timeout(120)
def test_gen_query_never_sends_a_closed_record(tmp_path, monkeypatch):
    "The local writer reads only open records by default, and restricted ones when asked; a closed one never."
    corpus = tmp_path / "corpus.jsonl"
    rows = [dict(id="open-1", text="Dredging contracts of the harbour board, 1874 to 1890, with tenders and plans."),
            dict(id="restr-1", text=f"Letters from the donor {RESTRICTED}-9 about the sale of the harbour.",
                 access=dict(status="restricted", until="2090-12-31", rule="Restricted until 2090.")),
            dict(id="closed-1", text=f"Medical reports of harbour pilots {CLOSED}-9 and their pay.",
                 access=dict(status="closed", until=None, rule="Closed: personal data."))]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "prompts.jsonl"
    monkeypatch.setenv("ARCHIVESRAG_PROMPT_LOG", str(log))
    run = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q.jsonl", "--backend", "local",
                  "--max_passage_words", "40")
    assert run.returncode in (0, 1), run.stderr           # 1: the one open passage's query may be filtered
    assert "withheld by access: 1 closed, 1 restricted" in run.stdout, run.stdout
    sent = log.read_text()
    assert "Dredging contracts" in sent and not planted(sent)
    assert not planted((tmp_path / "q.jsonl").read_text() if (tmp_path / "q.jsonl").exists() else "")
    log.unlink()
    run = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q2.jsonl", "--backend", "local",
                  "--max_passage_words", "40", "--include_restricted")
    sent = log.read_text()
    assert "withheld by access: 1 closed" in run.stdout, run.stdout
    assert RESTRICTED in sent and CLOSED not in sent


@pytest.fixture(scope="module")
def archive_index(archive_corpus):
    "A search index of the archive corpus, built by the CLI (a query with nothing hidden in it)."
    idx = archive_corpus.parent / "index"
    run = run_cli("search", "--corpus_file", archive_corpus, "--index_dir", idx, "--as_of", AS_OF, "harbour")
    assert run.returncode == 0, run.stderr
    return idx


# Queries that the hidden records answer best: a leak would put them on top.
LEAKY_QUERIES = ["personnel files of harbour pilots medical reports", "harbour master's own file",
                 "letters from the donor", "pupils' disciplinary records", "staff note water damaged box"]


@pytest.mark.fast
@pytest.mark.parametrize("retrieval", ["bm25", "dense", "hybrid"])
def test_search_never_shows_a_hidden_marker_to_the_public(archive_index, retrieval):
    from archivesrag.archives import AccessPolicy
    from archivesrag.search import SearchIndex
    index = SearchIndex.load(archive_index)
    for q in LEAKY_QUERIES:   # the API: every query, every passage the gate allows (k = 50 > the corpus)
        assert not planted(json.dumps(index.search(q, k=50, retrieval=retrieval, policy=AccessPolicy(as_of=AS_OF)))), q
    for fmt in ([], ["--json"]):   # the command line, as printed
        run = run_cli("search", "--index_dir", archive_index, "--retrieval", retrieval, "--k", "50", "--as_of", AS_OF,
                      *fmt, LEAKY_QUERIES[0])
        assert run.returncode == 0, run.stderr
        assert not planted(run.stdout + run.stderr), (retrieval, fmt)
        assert "hidden by access" in run.stderr + run.stdout


@pytest.mark.fast
def test_rrf_and_weighted_fusion_apply_the_gate(archive_index):
    "Through the API, both fusions, at k larger than the corpus: the top results are the allowed ones only."
    from archivesrag.archives import AccessPolicy
    from archivesrag.search import SearchIndex
    index = SearchIndex.load(archive_index)
    for fusion in ("wsum", "rrf"):
        index.manifest["fusion"] = fusion
        for q in LEAKY_QUERIES:
            hits = index.search(q, k=100, policy=AccessPolicy(as_of=AS_OF))
            assert hits and not planted(json.dumps(hits)), (fusion, q)
            assert len(hits) == int(index.visible(AccessPolicy(as_of=AS_OF))[0].sum())   # every allowed one, no more


@pytest.mark.fast
def test_clearance_and_date_reveal_exactly_what_they_should(archive_index):
    def seen(*flags):
        run = run_cli("search", "--index_dir", archive_index, "--k", "100", "--json", *flags, "harbour school records")
        assert run.returncode == 0, run.stderr
        return run.stdout
    staff, full = seen("--clearance", "staff", "--as_of", AS_OF), seen("--clearance", "full", "--as_of", AS_OF)
    assert RESTRICTED in staff and CLOSED not in staff
    assert RESTRICTED in full and CLOSED in full and not planted(full, NEVER)
    later = seen("--as_of", "2091-01-01")            # the 2090 restriction and the 2071 closure have ended
    assert RESTRICTED in later and "ZQX-CLOSED-4471" in later and "ZQX-CLOSED-4472" not in later   # undated: closed


@pytest.mark.fast
def test_a_filtered_search_returns_k_when_k_exist_brute_force(archive_index):
    "Filters and the gate before ranking: the top k equals brute force over the allowed records on a Flat index."
    import numpy as np
    from archivesrag.archives import AccessPolicy, RecordFilter
    from archivesrag.search import SearchIndex
    index = SearchIndex.load(archive_index)
    policy, filters = AccessPolicy(as_of=AS_OF), RecordFilter(date_from="1900")
    allowed, _ = index.visible(policy, filters)
    q = "harbour board minutes"
    emb = np.asarray(index.dataset["embeddings"], dtype=np.float32) @ index.encode([q])[0]
    expected = [index.dataset[int(i)]["id"] for i in np.argsort(-emb) if allowed[i]][:3]
    got = [h["id"] for h in index.search(q, k=3, retrieval="dense", policy=policy, filters=filters)]
    assert got == expected and len(got) == 3


@pytest.mark.timeout(600)
def test_ask_never_puts_a_hidden_marker_in_a_prompt_or_an_answer(archive_index, tmp_path, monkeypatch, llama_server):
    log = tmp_path / "prompts.jsonl"
    monkeypatch.setenv("ARCHIVESRAG_PROMPT_LOG", str(log))
    for backend in (["--backend", "local"], ["--base_url", llama_server, "--model", "smollm2"]):
        for q in LEAKY_QUERIES[:3]:
            run = run_cli("ask", "--index_dir", archive_index, "--as_of", AS_OF, "--max_tokens", "64", "--generate",
                          *backend, q)
            # a 135M model sampling at the recipe's temperature may ramble past the limit: that is said, in one line
            assert run.returncode == 0 or "cut by the token limit" in run.stderr, run.stderr
            assert not planted(run.stdout + run.stderr), (backend, q)
    sent = log.read_text()
    assert sent.count('"messages"') >= 3 and not planted(sent)
    log.unlink()
    run = run_cli("ask", "--index_dir", archive_index, "--as_of", AS_OF, "--clearance", "full", "--generate",
                  "--backend", "local", LEAKY_QUERIES[0])
    assert run.returncode == 0 and CLOSED in log.read_text()   # the full clearance does see the closed file


@pytest.mark.fast
def test_vllm_prompt_building_checks_what_it_is_handed():
    "build_messages drops what the policy may not see, whoever retrieved it (vLLM's path builds its prompt here)."
    from archivesrag.rag import build_messages
    recs = [dict(id="a#0", text="Open minutes of the board.", title="Minutes"),
            dict(id="b#0", text=f"Pilots' medical files {CLOSED}-1.", title="Pilots",
                 access=dict(status="closed", until=None, rule="Closed."))]
    msgs = build_messages("What do the files hold?", recs, k=3, plain=False)
    assert "Open minutes" in msgs[-1]["content"] and CLOSED not in json.dumps(msgs)


@pytest.mark.fast
def test_evaluate_scores_what_the_public_sees(archive_corpus, tmp_path):
    "Held-out queries of hidden passages are left out, counted, and the clearance is said."
    recs = read_jsonl(archive_corpus)
    queries = [dict(id=r["id"], query=f"what does {r['title']} hold", positive=[r["text"]]) for r in recs]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in queries))
    split = tmp_path / "split.json"
    split.write_text(json.dumps(dict(seed=0, by="doc_id", train_ids=[], test_ids=[r["id"] for r in recs])))
    run = run_cli("evaluate", "--corpus_file", archive_corpus, "--queries_file", qfile, "--split_file", split,
                  "--retrieval", "bm25", "--no_plots", "--output_dir", tmp_path / "ev", "--as_of", AS_OF)
    assert run.returncode == 0, run.stderr
    assert "scored as seen with clearance public, as of 2026-01-01" in run.stdout, run.stdout
    assert "hidden by access" in run.stdout
