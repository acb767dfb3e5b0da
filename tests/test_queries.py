"""archivesrag.queries and `archivesrag gen-query`: real backends on a slice of the sample archive, a scripted
OpenAI-compatible server for malformed replies, SIGKILL + resume, and the API key kept out of every output."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from archivesrag.core import read_jsonl, write_jsonl
from archivesrag.corpus import load_sample
from archivesrag.llm import get_llm
from archivesrag.cli import main
from archivesrag.queries import FEW_SHOT_EXAMPLES, FEW_SHOT_PROMPT, QUERY_PROMPT, generate_queries, load_sample_queries
from helpers import CLI_CODE, http_server, reply_chat_completion, run_cli

pytestmark = pytest.mark.timeout(120)  # a real server on 127.0.0.1: a request that hangs fails the test, not the run
SECRET = "sk-test-NEVER-IN-OUTPUT-0123456789"
PARROT = "What happens when the checksums of digitised map files fail the quarterly fixity audit?"  # example 2, reworded


# ---------------------------------------------------------------- a scripted OpenAI-compatible server
class _Handler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions. The reply depends on a marker in the passage (the last user message):
    BADJSON -> not JSON, EMPTY -> empty content, NOKEY -> JSON without 'query', else a unique good query."""
    delay = 0.0
    broken = False  # every reply is invalid JSON (a server with the wrong model behind it)
    seen_auth = []
    max_tokens_seen = []

    def log_message(self, *a): pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        type(self).max_tokens_seen.append((text, body.get("max_tokens")))
        finish = "stop"
        if type(self).broken or "BADJSON" in text: content = "Sure! The query is about archives."
        elif "ENDLESS" in text or ("LONG" in text and body.get("max_tokens", 0) < 150):
            content, finish = '{"query": "Which disposal approvals cover the', "length"
        elif "PARROT" in text: content = json.dumps({"query": PARROT})
        elif "EMPTY" in text: content = ""
        elif "NOKEY" in text: content = '{"question": "Which records were destroyed?"}'
        else:
            pid = text.split("passage ")[1].split()[0] if "passage " in text else "x"
            key = pid if pid == "x" else f"{pid}{body.get('seed')}"  # distinct per passage and seed; "x": one query
            h = hashlib.md5(key.encode()).hexdigest()
            content = json.dumps({"query": f"Which disposal approvals cover {' '.join(h[i:i + 5] for i in range(0, 25, 5))}?"})
        time.sleep(self.delay)
        reply_chat_completion(self, body["model"], content, finish)


@pytest.fixture(scope="module")
def fake_server():
    with http_server(_Handler) as url: yield url


def _corpus(path: Path, n: int, markers: dict | None = None) -> Path:
    "A corpus.jsonl of n passages `P000#0 …` (already chunked, so no tokenizer is needed)."
    markers = markers or {}
    recs = [{"id": f"P{i:03d}#0", "doc_id": f"P{i:03d}", "chunk": 0, "title": f"File {i}", "series": "Minutes",
             "text": f"{markers.get(i, '')} Minutes of archival passage P{i:03d}#0 on the disposal of case files "
                     f"from box {i}, approved by the records committee."} for i in range(n)]
    write_jsonl(recs, path)
    return path


# ---------------------------------------------------------------- malformed replies, the key, the CLI
@pytest.mark.fast
def test_malformed_replies_end_in_failures_file(fake_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    corpus = _corpus(tmp_path / "corpus.jsonl", 6, {1: "BADJSON", 3: "EMPTY", 4: "NOKEY"})
    out, fail = tmp_path / "q.jsonl", tmp_path / "fail.jsonl"
    rc = main(["gen-query", "--input_file", str(corpus), "--output_file", str(out), "--failures_file", str(fail),
               "--base_url", fake_server, "--model", "fake", "--concurrency", "2"])
    assert rc == 0  # the run finishes
    done = read_jsonl(out)
    assert sorted(r["id"] for r in done) == ["P000#0", "P002#0", "P005#0"]
    for r in done:
        assert r["positive"][0].startswith(" Minutes of archival passage") and r["series"] == "Minutes"
        assert set(r) >= {"id", "query", "positive", "doc_id", "title"}
    reasons = {r["id"]: r["reason"] for r in read_jsonl(fail)}
    assert reasons == {"P001#0": "invalid JSON", "P003#0": "empty reply", "P004#0": "missing key 'query'"}
    assert read_jsonl(fail)[0]["reply"] == "Sure! The query is about archives."  # the raw reply is kept
    printed = capsys.readouterr()
    assert "3 done" in printed.out and "3 failed" in printed.out
    # the key went to the server, and nowhere else
    assert any(SECRET in a for a in _Handler.seen_auth)
    for f in (out, fail):
        assert SECRET not in f.read_text()
    assert SECRET not in printed.out + printed.err

    # rerun: the 3 done are skipped, the 3 failed are tried again (and fail again: not one new query -> exit 1)
    assert main(["gen-query", "--input_file", str(corpus), "--output_file", str(out), "--failures_file", str(fail),
                 "--base_url", fake_server, "--model", "fake"]) == 1
    printed = capsys.readouterr()
    assert "3 skipped" in printed.out and "3 failed" in printed.out and "no query was written" in printed.err
    assert len(read_jsonl(out)) == 3 and sorted(r["id"] for r in read_jsonl(fail)) == ["P001#0", "P003#0", "P004#0"]


@pytest.mark.fast
def test_filters_duplicates_and_seed_input(fake_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # the seed's "Original Data" format: only `text`; chunked by load_corpus, ids from file name and line
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"InterPARES Trust item {i} studies digital records entrusted to "
                                                 "the Internet."}) + "\n" for i in range(3)))
    s = generate_queries(data, tmp_path / "query.jsonl", llm=get_llm(base_url=fake_server, model="fake"), verbose=False)
    recs = read_jsonl(tmp_path / "query.jsonl")
    # the fake server answers every passage with the same query (no 'passage <id>' in the text): 1 kept, 2 duplicates
    assert s["done"] == 1 and s["filtered_by"] == {"duplicate": 2}
    assert recs[0]["id"] == "data-1#0" and recs[0]["positive"][0].startswith("InterPARES Trust item 0")
    fails = read_jsonl(tmp_path / "query.failures.jsonl")
    assert {f["reason"] for f in fails} == {"filtered: duplicate"}


@pytest.mark.fast
def test_queries_per_passage_and_resume(fake_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = _corpus(tmp_path / "corpus.jsonl", 4)
    out = tmp_path / "q.jsonl"
    args = ["gen-query", "--input_file", str(corpus), "--output_file", str(out), "--base_url", fake_server,
            "--model", "fake", "--queries_per_passage", "2"]
    assert main(args + ["--limit", "3"]) == 0
    assert main(args) == 0  # resumes: only the 4th passage is new
    recs = read_jsonl(out)
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted([f"P{i:03d}#0" for i in range(4)] * 2)
    assert all(len({r["query"] for r in recs if r["id"] == i}) == 2 for i in set(ids))  # two different queries


@pytest.mark.fast
def test_cli_help_and_bad_input(tmp_path, capsys):
    r = run_cli("gen-query", "--help")
    assert r.returncode == 0
    for flag in ["--input_file", "--output_file", "--backend", "--model", "--base_url", "--concurrency", "--timeout",
                 "--queries_per_passage", "--prompt_file", "--failures_file", "--limit", "--max_tokens",
                 "--temperature", "--seed", "--max_passage_words", "--min_words", "--max_copy"]:
        assert flag in r.stdout or flag.replace("_", "-") in r.stdout, flag  # the parser may print either spelling
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "trunc\n')
    assert main(["gen-query", "--input_file", str(bad), "--output_file", str(tmp_path / "q.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.jsonl:2" in err


# ---------------------------------------------------------------- issue 13: the edges of gen-query
def _gen(corpus, out, *extra, **kw):
    "`archivesrag gen-query`, as a user runs it (`run_cli`)."
    r = run_cli("gen-query", "--input_file", corpus, "--output_file", out, *extra, **kw)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.fast
def test_nothing_written_exits_non_zero_and_a_rerun_retries_the_failures(fake_server, tmp_path):
    corpus, out = _corpus(tmp_path / "corpus.jsonl", 3), tmp_path / "q.jsonl"
    _Handler.broken = True
    try: r = _gen(corpus, out, "--base_url", fake_server, "--model", "fake")
    finally: _Handler.broken = False
    assert r.returncode == 1 and "0 done" in r.stdout and "3 failed" in r.stdout  # the summary, then the error
    assert r.stderr.strip().splitlines()[-1].startswith("archivesrag gen-query: error: no query was written")
    assert len(read_jsonl(tmp_path / "q.failures.jsonl")) == 3
    r = _gen(corpus, out, "--base_url", fake_server, "--model", "fake")  # the server works again
    assert r.returncode == 0 and "3 done (incl. 3 that failed before)" in r.stdout and "0 skipped" in r.stdout
    assert sorted(x["id"] for x in read_jsonl(out)) == ["P000#0", "P001#0", "P002#0"]
    assert (tmp_path / "q.failures.jsonl").read_text() == ""  # only what still fails is listed
    r = _gen(corpus, out, "--base_url", fake_server, "--model", "fake")
    assert r.returncode == 0 and "3 skipped" in r.stdout


@pytest.mark.fast
def test_dead_server_and_timeout_flag(fake_server, tmp_path):
    corpus = _corpus(tmp_path / "corpus.jsonl", 1)
    _Handler.delay = 1.0  # longer than --timeout: every try (the openai client's own retries too) times out
    try: r = _gen(corpus, tmp_path / "q.jsonl", "--base_url", fake_server, "--model", "fake", "--timeout", "0.3")
    finally: _Handler.delay = 0.0
    assert r.returncode == 1 and "1 failed" in r.stdout
    assert "Timeout" in read_jsonl(tmp_path / "q.failures.jsonl")[0]["reason"]


@pytest.mark.parametrize("args,message", [
    (["--limit", "0"], "--limit must be at least 1 (got 0)"),
    (["--limit", "-1"], "--limit must be at least 1 (got -1)"),
    (["--prompt_file", "latin1.txt"], "latin1.txt:1: not UTF-8 text"),
    (["--failures_file", "q.jsonl"], "--failures_file must differ"),
])
@pytest.mark.fast
def test_bad_flags_get_one_line(fake_server, tmp_path, args, message):
    corpus = _corpus(tmp_path / "corpus.jsonl", 2)
    (tmp_path / "latin1.txt").write_bytes("Write a query for this r\u00e9sum\u00e9: {text}".encode("latin-1"))
    r = _gen(corpus, "q.jsonl", "--base_url", fake_server, "--model", "fake", *args, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("archivesrag gen-query: error: ") and message in r.stderr
    assert not (tmp_path / "q.jsonl").exists() or (tmp_path / "q.jsonl").read_text() == ""


@pytest.mark.fast
def test_output_equal_to_input_is_refused(fake_server, tmp_path):
    corpus = _corpus(tmp_path / "corpus.jsonl", 2)
    before = corpus.read_bytes()
    r = _gen(corpus, corpus, "--base_url", fake_server, "--model", "fake")
    assert r.returncode == 2 and "--output_file is the input file" in r.stderr
    assert corpus.read_bytes() == before


@pytest.mark.timeout(90)
def test_two_runs_on_one_output_the_second_stops(fake_server, tmp_path):
    n = 20
    corpus, out = _corpus(tmp_path / "corpus.jsonl", n), tmp_path / "q.jsonl"
    args = ["gen-query", "--input_file", corpus, "--output_file", out, "--base_url", fake_server, "--model", "fake",
            "--concurrency", "1"]
    _Handler.delay = 1.0  # slow replies: the first run is still busy (>= 18 s) while the second one starts
    try:
        first = subprocess.Popen([sys.executable, "-c", CLI_CODE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)  # a process of its own, running while the second starts here
        deadline = time.time() + 120
        while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
            time.sleep(0.05)
        second = run_cli(*args)  # while the first still runs
        assert first.poll() is None, "the first run ended too early for this test"
        _Handler.delay = 0.0
        first_out, first_err = first.communicate(timeout=300)
    finally:
        _Handler.delay = 0.0
    assert second.returncode == 2 and "another run is writing this file" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.returncode == 0, first_err
    assert sorted(r["id"] for r in read_jsonl(out)) == [f"P{i:03d}#0" for i in range(n)]  # each passage once
    assert not Path(str(out) + ".lock").exists()


@pytest.mark.fast
def test_copies_of_the_prompt_examples_are_filtered(fake_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = _corpus(tmp_path / "corpus.jsonl", 3, {1: "PARROT"})
    s = generate_queries(corpus, tmp_path / "q.jsonl", llm=get_llm(base_url=fake_server, model="fake"),
                         prompt=FEW_SHOT_PROMPT, examples=FEW_SHOT_EXAMPLES, verbose=False)
    assert s["done"] == 2 and s["filtered_by"] == {"example_copy": 1} and s["retried"] == 1
    assert read_jsonl(tmp_path / "q.failures.jsonl")[0]["reason"] == "filtered: example_copy"


@pytest.mark.fast
def test_reply_cut_at_the_token_limit_is_retried_with_twice_the_limit(fake_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = _corpus(tmp_path / "corpus.jsonl", 3, {0: "LONG", 1: "ENDLESS"})
    _Handler.max_tokens_seen.clear()
    s = generate_queries(corpus, tmp_path / "q.jsonl", llm=get_llm(base_url=fake_server, model="fake"),
                         max_tokens=96, verbose=False)
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "q.jsonl")) == ["P000#0", "P002#0"]
    assert sorted(m for t, m in _Handler.max_tokens_seen if "LONG" in t) == [96, 192]
    assert sorted(m for t, m in _Handler.max_tokens_seen if "ENDLESS" in t) == [96, 192]  # once, then recorded
    fail = read_jsonl(tmp_path / "q.failures.jsonl")
    assert [f["id"] for f in fail] == ["P001#0"] and "length" in fail[0]["reason"] and s["failed"] == 1


# ---------------------------------------------------------------- SIGKILL midway, rerun, every passage exactly once
@pytest.mark.timeout(60)
def test_sigkill_and_resume(fake_server, tmp_path):
    "A real process killed midway (raw `Popen`), then rerun as a process: what a kill leaves is the point."
    n = 40
    corpus = _corpus(tmp_path / "corpus.jsonl", n)
    out = tmp_path / "q.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", CLI_CODE, "gen-query", "--input_file", str(corpus), "--output_file", str(out),
           "--base_url", fake_server, "--model", "fake", "--concurrency", "1"]
    _Handler.delay = 0.15
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        log1 = proc.communicate()[0].decode()
        lines_at_kill = out.read_text().count("\n")
        assert 10 <= lines_at_kill < n, "the run should have been killed midway"
        with open(out, "a") as f: f.write('{"id": "P039#0", "query": "a torn wri')  # a write cut short by the kill
        _Handler.delay = 0.0
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        _Handler.delay = 0.0
    assert done.returncode == 0, done.stdout + done.stderr
    assert "partial last line" in done.stdout
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == [f"P{i:03d}#0" for i in range(n)]  # every passage exactly once
    assert f"{n - lines_at_kill} done" in done.stdout or f"{lines_at_kill} skipped" in done.stdout
    for text in (log1, done.stdout, done.stderr, out.read_text()):
        assert SECRET not in text


# ---------------------------------------------------------------- real models on a slice of the sample archive
@pytest.fixture(scope="module")
def sample_slice():
    ds = load_sample(verbose=False)
    return ds.select([0, len(ds) // 2])


def _valid(records, passages):
    by_id = {p["id"]: p for p in passages}
    for r in records:
        assert r["id"] in by_id and r["positive"] == [by_id[r["id"]]["text"]]
        assert isinstance(r["query"], str) and len(r["query"].split()) >= 4
        assert r["doc_id"] == by_id[r["id"]]["doc_id"] and r["fonds"] == by_id[r["id"]]["fonds"]


@pytest.mark.timeout(180)
def test_local_backend_on_sample_slice(sample_slice, tmp_path):
    llm = get_llm("local")
    s = generate_queries(sample_slice, tmp_path / "q.jsonl", llm=llm, max_passage_words=60, verbose=False)
    recs = read_jsonl(tmp_path / "q.jsonl") if (tmp_path / "q.jsonl").stat().st_size else []
    assert s["done"] == len(recs) >= 1 and s["done"] + s["failed"] + s["filtered"] == len(sample_slice)
    _valid(recs, list(sample_slice))
    assert s["usage"]["requests"] >= len(sample_slice) and s["cost_usd"] is None


@pytest.mark.timeout(240)
def test_openai_backend_on_sample_slice(llama_server, sample_slice, tmp_path):
    llm = get_llm("openai", model="smollm2", base_url=llama_server, concurrency=2)
    s = generate_queries(sample_slice, tmp_path / "q.jsonl", llm=llm, prompt=FEW_SHOT_PROMPT,
                         examples=FEW_SHOT_EXAMPLES, max_passage_words=60, verbose=False)
    recs = read_jsonl(tmp_path / "q.jsonl") if (tmp_path / "q.jsonl").stat().st_size else []
    assert s["done"] == len(recs) >= 1 and s["done"] + s["failed"] + s["filtered"] == len(sample_slice)
    _valid(recs, list(sample_slice))
    assert s["llm"].startswith("openai:smollm2")


@pytest.mark.fast
def test_openai_default_prompt_is_the_seeds():
    from archivesrag.queries import default_prompt
    from archivesrag.llm import OpenAILLM
    assert default_prompt(OpenAILLM(base_url="http://127.0.0.1:1/v1")) == (QUERY_PROMPT, [])
    assert QUERY_PROMPT.startswith("You are a smart and helpful assistant.\n    Your mission is")


@pytest.mark.fast
def test_sample_queries_cover_the_sample_archive():
    sq = load_sample_queries()
    ds = load_sample(verbose=False)
    text = dict(zip(ds["id"], ds["text"]))
    ids = [r["id"] for r in sq]
    assert len(ids) == len(set(ids)) and len(ids) >= 0.8 * len(ds)
    for r in sq:
        assert r["positive"] == [text[r["id"]]] and r["query"].strip()
