"""Extractive answers (06_rag): quoted sentences of the passages the caller may see, with their citations; the mode
choice (offline extractive, generated with a real LLM) and its flags; the capstone references and `answer_is_right`.

Access is checked as in `test_access.py`: unique markers are planted in closed, restricted-until-the-future,
internal-audience and unpublished units of the bundled test archives; no marker may appear in an extractive answer,
through the API or the `ask` command, for BM25, dense and hybrid retrieval, while the restricted one does appear with
`--clearance staff` (or once its date has passed) and the closed one with `--clearance full`. No LLM is ever loaded."""
import json
import re

import pytest
from helpers import run_cli, written_archives_corpus

from archivesrag.archives import AccessPolicy
from archivesrag.core import InputError, read_jsonl
from archivesrag.corpus import sample_path
from archivesrag.rag import (CAPSTONE_REFERENCES, NO_ANSWER, NO_SENTENCE, SAMPLE_QUESTIONS, _LazyLLM, answer,
                             answer_is_right, answer_mode, cited_docs, extract_answer, split_sentences)

# Planted in the fixtures: closed (no date, or until 2071), restricted until 2090, staff-only notes, unpublished units.
CLOSED, RESTRICTED, INTERNAL, UNPUBLISHED = "ZQX-CLOSED", "ZQX-RESTRICTED", "ZQX-INTERNAL", "ZQX-UNPUBLISHED"
NEVER = (INTERNAL, UNPUBLISHED)          # dropped at load time: for no one, ever
HIDDEN = (CLOSED, RESTRICTED) + NEVER    # hidden from the public today
AS_OF = "2026-01-01"                      # tests pass a fixed date; the CLI's default is today
RETRIEVALS = ["bm25", "dense", "hybrid"]
# Questions the hidden records answer best: a leak would put their sentences first.
LEAKY_QUERIES = ["personnel files of harbour pilots medical reports", "harbour master's own file",
                 "letters from the donor's family", "pupils' admission registers of the last decade",
                 "staff note water damaged box"]
ALL = ["--k", "100", "--min_score", "-1"]  # every passage the gate allows is retrieved, and kept


def planted(text: str, markers=HIDDEN) -> list[str]:
    return [m for m in markers if m in text]


class NoLLM:
    "An LLM that fails the test if it is used at all (tokenizer, window, chat); `name` says which backend it stands for."
    def __init__(self, name: str): self.name = name
    def chat(self, *a, **kw): raise AssertionError("the LLM was called")
    def count_tokens(self, text): raise AssertionError("the LLM was called")
    @property
    def context_window(self): raise AssertionError("the LLM was called")


@pytest.fixture(scope="module")
def archive_index(tmp_path_factory):
    "The three written fixtures, loaded by `archivesrag corpus` and indexed by `archivesrag search`, as a user would."
    tmp = tmp_path_factory.mktemp("extractive")
    written_archives_corpus(tmp)
    assert CLOSED in (tmp / "corpus.jsonl").read_text() and RESTRICTED in (tmp / "corpus.jsonl").read_text()
    run = run_cli("search", "--corpus_file", tmp / "corpus.jsonl", "--index_dir", tmp / "index", "--as_of", AS_OF, "harbour")
    assert run.returncode == 0, run.stderr
    return tmp / "index"


@pytest.fixture(scope="module")
def index(archive_index):
    from archivesrag.search import SearchIndex
    return SearchIndex.load(archive_index)


# ---- access ------------------------------------------------------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize("retrieval", RETRIEVALS)
def test_extractive_answer_never_quotes_a_hidden_marker(index, retrieval):
    "The API: every leaky question, every passage the gate allows; the answer, its quotes and its passages hold no marker."
    public = AccessPolicy(as_of=AS_OF)
    for q in LEAKY_QUERIES:
        res = answer(q, index, k=100, retrieval=retrieval, min_score=-1, policy=public, mode="extractive")
        assert res["mode"] == "extractive" and res["llm"] is None
        assert not planted(json.dumps(res, default=str)), (retrieval, q, res["text"])
        if res["results"]: assert res["grounded"] and res["text"]  # BM25 may find no word of the question


@pytest.mark.fast
def test_extract_answer_checks_what_it_is_handed(index):
    "Hidden passages handed to `extract_answer` directly are dropped before a sentence is read (the prompt builder's rule)."
    every = [{c: v for c, v in r.items() if c != "embeddings"} for r in index.dataset]
    assert planted(json.dumps(every, default=str), (CLOSED, RESTRICTED))  # they are in the index
    for q in LEAKY_QUERIES:
        res = extract_answer(q, every, index, policy=AccessPolicy(as_of=AS_OF))
        assert res["text"] and not planted(json.dumps(res, default=str)), (q, res["text"])
    staff = extract_answer("letters from the donor's family", every, index, policy=AccessPolicy("staff", AS_OF))
    assert RESTRICTED in staff["text"] and CLOSED not in json.dumps(staff, default=str)


@pytest.mark.fast
@pytest.mark.parametrize("retrieval", RETRIEVALS)
def test_ask_extractive_never_prints_a_hidden_marker(archive_index, retrieval):
    "The command line, as printed (answer, sources, passages), the default offline mode: no marker on stdout or stderr."
    for q in LEAKY_QUERIES[:2]:
        run = run_cli("ask", "--index_dir", archive_index, "--retrieval", retrieval, "--as_of", AS_OF, *ALL, q)
        assert run.returncode == 0, run.stderr
        assert "\nPassages:" in run.stdout and not planted(run.stdout + run.stderr), (retrieval, q, run.stdout)


@pytest.mark.fast
def test_clearance_and_date_reveal_what_they_should_in_extractive_answers(index):
    def said(q, policy, retrieval):
        return answer(q, index, k=100, retrieval=retrieval, min_score=-1, policy=policy, mode="extractive")["text"]
    for retrieval in RETRIEVALS:
        staff = said("letters from the donor's family", AccessPolicy("staff", AS_OF), retrieval)
        assert RESTRICTED in staff and CLOSED not in staff, (retrieval, staff)
        full = said("personnel files of harbour pilots medical reports", AccessPolicy("full", AS_OF), retrieval)
        assert CLOSED in full and not planted(full, NEVER), (retrieval, full)
        later = said("letters from the donor's family", AccessPolicy(as_of="2091-01-01"), retrieval)  # 2090 has passed
        assert RESTRICTED in later, (retrieval, later)


@pytest.mark.fast
def test_ask_clearance_reveals_restricted_to_staff_and_closed_to_full(archive_index):
    staff = run_cli("ask", "--index_dir", archive_index, "--as_of", AS_OF, "--clearance", "staff", *ALL,
                    "letters from the donor's family")
    assert staff.returncode == 0, staff.stderr
    assert RESTRICTED in staff.stdout and CLOSED not in staff.stdout + staff.stderr
    full = run_cli("ask", "--index_dir", archive_index, "--as_of", AS_OF, "--clearance", "full", "--extractive",
                   "--retrieval", "dense", *ALL, "personnel files of harbour pilots medical reports")
    assert full.returncode == 0, full.stderr
    assert CLOSED in full.stdout and not planted(full.stdout + full.stderr, NEVER)


# ---- extraction ---------------------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_split_sentences_keeps_sentences_verbatim_and_marks_chunk_cuts():
    assert split_sentences("register, all site plans. Repair. The files (e.g. site plans) were kept.\n\nDr. Brown "
                           "signed the list. It was sent on") == [
        "…register, all site plans.", "The files (e.g. site plans) were kept.", "Dr. Brown signed the list.",
        "It was sent on…"]
    assert split_sentences("The audit found 4.1 million files. No further failures were found.") == [
        "The audit found 4.1 million files.", "No further failures were found."]
    assert split_sentences("") == [] and split_sentences("Agreed.") == []


@pytest.mark.fast
def test_extractive_answer_quotes_cites_and_keeps_the_result_shape(index):
    res = answer("personnel files of harbour pilots medical reports", index, k=3, mode="extractive",
                 policy=AccessPolicy("full", AS_OF))
    for key in ("answer", "text", "passages", "scores", "cited", "grounded", "results", "mode", "question",
                "retrieval", "best_score", "min_score", "error", "llm", "prompt_tokens", "completion_tokens"):
        assert key in res, key
    assert res["grounded"] and res["error"] is None and res["completion_tokens"] == 0 and 1 <= len(res["sentences"]) <= 2
    texts = {r["id"]: " ".join(r["text"].split()) for r in res["results"]}
    for s in res["sentences"]:  # verbatim from a passage it was given, then its citation: reference code, else id
        assert s["sentence"].strip("…") in texts[s["id"]]
        assert f"{s['sentence']} [{s['ref_code'] or s['id']}]" in res["text"]
    assert set(res["cited"]) <= set(res["passages"]) and res["answer"].startswith(res["text"])
    assert all(f"[{p}]" in res["answer"] for p in res["passages"])  # listed: as a source or as retrieved


@pytest.mark.fast
def test_citation_is_the_reference_code_when_there_is_one_else_the_id():
    class Index:  # a stand-in with an embedder that sees only the word "kept"
        def encode(self, texts): import numpy as np; return np.array([[1.0, 0.0]], dtype=np.float32)
        class retriever:
            class model:
                @staticmethod
                def encode(texts, **kw):
                    import numpy as np
                    return np.array([[1.0, 0.0] if "kept" in t else [0.0, 1.0] for t in texts], dtype=np.float32)
    recs = [dict(id="A-1#0", ref_code="PA/RS/1999-004", text="Permits are kept for 10 years. The office closed early."),
            dict(id="B-2#0", text="Minutes were kept by the clerk in a ledger.")]
    res = extract_answer("How long are permits kept?", recs, Index(), n=2, min_share=0.0)
    assert "Permits are kept for 10 years. [PA/RS/1999-004]" in res["text"]
    assert "Minutes were kept by the clerk in a ledger. [B-2#0]" in res["text"]
    assert extract_answer("How long are permits kept?", [dict(id="C#0", text="Agreed.")], Index())["answer"] == NO_SENTENCE


@pytest.mark.fast
def test_nothing_relevant_quotes_nothing(index):
    res = answer("What is the boiling point of mercury?", index, mode="extractive", min_score=0.9)
    assert res["answer"].startswith(NO_ANSWER.split("(")[0]) and res["grounded"] is False
    assert res["passages"] == [] and res["cited"] == [] and res["text"] == ""


# ---- the mode and its flags ---------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_mode_is_extractive_offline_and_generated_with_a_real_llm(index, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert answer_mode() == "extractive" and answer_mode(NoLLM("local:SmolLM2.gguf")) == "extractive"
    for name in ("openai:gpt-4o", "openai:smollm2@http://127.0.0.1:8000/v1", "vllm:meta-llama/Meta-Llama-3-8B-Instruct"):
        assert answer_mode(NoLLM(name)) == "generated", name
    lazy = lambda **s: _LazyLLM({"backend": None, "model": None, "base_url": None, "timeout": None, **s})
    assert answer_mode(lazy()) == "extractive" and answer_mode(lazy(base_url="http://127.0.0.1:9/v1")) == "generated"
    assert answer_mode(lazy(backend="vllm")) == "generated" and answer_mode(lazy(backend="vllm"), "extractive") == "extractive"
    with pytest.raises(InputError, match="mode must be one of extractive, generated"): answer_mode(mode="abstractive")
    # extractive never loads or asks the LLM: a GGUF that does not exist, and an LLM that fails if called
    q = "personnel files of harbour pilots medical reports"
    for llm in (lazy(backend="local", model="/nope/missing.gguf"), NoLLM("local:SmolLM2.gguf")):
        assert answer(q, index, llm=llm, policy=AccessPolicy(as_of=AS_OF))["mode"] == "extractive"
    assert answer(q, index, llm=NoLLM("openai:x"), mode="extractive")["llm"] is None
    with pytest.raises(AssertionError, match="the LLM was called"):  # a real LLM is asked by default
        answer(q, index, llm=NoLLM("openai:gpt-4o"))


@pytest.mark.fast
def test_ask_flags_generate_and_extractive(archive_index):
    both = run_cli("ask", "--index_dir", archive_index, "--generate", "--extractive", "harbour pilots")
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert "--generate and --extractive exclude each other" in both.stderr.strip().splitlines()[-1]
    helped = run_cli("ask", "--help")
    assert helped.returncode == 0 and "--generate" in helped.stdout and "--extractive" in helped.stdout
    # offline: quoted, and the local model (here a file that does not exist) is never loaded; its flag is said unused
    off = run_cli("ask", "--index_dir", archive_index, "--backend", "local", "--model", "/nope/missing.gguf",
                  "--as_of", AS_OF, "harbour board minutes")
    assert off.returncode == 0, off.stderr
    assert "--model apply with --generate" in off.stderr and "Sources:" in off.stdout
    # --extractive with a server that is not there: the server is never asked
    quoted = run_cli("ask", "--index_dir", archive_index, "--base_url", "http://127.0.0.1:9/v1", "--model", "none",
                     "--extractive", "--as_of", AS_OF, "harbour board minutes")
    assert quoted.returncode == 0 and "Sources:" in quoted.stdout, quoted.stderr


# ---- the capstone references --------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_capstone_references_are_the_8_questions_and_their_passages_state_every_fact():
    from archivesrag.pipeline import DEMO_QUESTIONS
    assert [r["question"] for r in CAPSTONE_REFERENCES] == list(DEMO_QUESTIONS) + SAMPLE_QUESTIONS
    docs = {r["doc_id"]: r for r in read_jsonl(sample_path())}
    for ref in CAPSTONE_REFERENCES:
        assert ref["facts"] and all(isinstance(ps, list) and ps for ps in ref["facts"].values())
        for d in (ref["doc_id"], *ref.get("also", ())):
            assert (docs[d].get("access") or {}).get("status", "open") == "open", d  # the public may read the answer
            for fact, ps in ref["facts"].items():
                assert any(re.search(p, docs[d]["text"], re.I) for p in ps), (d, fact)


@pytest.mark.fast
def test_answer_is_right_needs_every_fact_and_the_right_citation():
    bank = next(r for r in CAPSTONE_REFERENCES if "bank reconciliation" in r["question"])
    src = [dict(id="ARC-0145#0", doc_id="ARC-0145", ref_code="PHA/RET/001")]
    quote = "Monthly bank reconciliation statements are retained for seven years after the close of the fiscal year."
    assert answer_is_right(dict(text=f"{quote} [PHA/RET/001]", cited=["ARC-0145#0"], results=src), bank)["right"]
    assert answer_is_right(dict(text=f"{quote} [PHA/RET/001]", results=src), bank)["right"]  # by reference code alone
    assert answer_is_right(dict(text=f"{quote} [ARC-0010#0]"), bank)["right"]  # `also`: the city's schedule says so too
    assert cited_docs(dict(text="x [PHA/RET/001]", results=src)) == {"ARC-0145"}
    wrong = answer_is_right(dict(text="They are kept 10 years after the fiscal year [ARC-0145#0].", cited=["ARC-0145#0"]), bank)
    assert wrong["missed"] == ["seven years"] and wrong["cites_reference"] and not wrong["right"]
    miscited = answer_is_right(dict(text=f"{quote} [ARC-0019#0]", cited=["ARC-0019#0"]), bank)
    assert not miscited["cites_reference"] and not miscited["right"] and not miscited["missed"]
    assert answer_is_right(dict(text="As the schedule says [PA/RS/7 years]."), bank)["missed"] == list(bank["facts"])
    assert not answer_is_right(dict(text=""), bank)["right"]


def test_capstone_questions_answered_by_quotation(capsys):
    "The 8 capstone questions on the sample archive's index, extractive: quoted, cited, scored (the score is printed)."
    from archivesrag.corpus import load_sample
    from archivesrag.search import SearchIndex
    index = SearchIndex.build(load_sample(verbose=False))
    right = 0
    for ref in CAPSTONE_REFERENCES:
        res = answer(ref["question"], index, k=3, mode="extractive")
        assert res["grounded"] and res["llm"] is None and res["sentences"]
        assert all(s["sentence"].strip("…") in " ".join(next(r["text"] for r in res["results"] if r["id"] == s["id"]).split())
                   for s in res["sentences"])
        right += answer_is_right(res, ref)["right"]
    with capsys.disabled(): print(f"\nextractive: {right} of {len(CAPSTONE_REFERENCES)} capstone answers right")
