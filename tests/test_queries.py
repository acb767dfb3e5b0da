"""archivesrag.queries and `archivesrag gen-query`: real backends on a slice of the sample archive, a scripted
OpenAI-compatible server for malformed replies, SIGKILL + resume, and the API key kept out of every output."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from archivesrag.corpus import load_sample, read_jsonl, write_jsonl
from archivesrag.llm import get_llm
from archivesrag.pipeline import main
from archivesrag.queries import (FEW_SHOT_EXAMPLES, FEW_SHOT_PROMPT, QUERY_PROMPT, gen_query_cli, generate_queries,
                                 load_sample_queries)

SECRET = "sk-test-NEVER-IN-OUTPUT-0123456789"


# ---------------------------------------------------------------- a scripted OpenAI-compatible server
class _Handler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions. The reply depends on a marker in the passage (the last user message):
    BADJSON -> not JSON, EMPTY -> empty content, NOKEY -> JSON without 'query', else a unique good query."""
    delay = 0.0
    seen_auth = []

    def log_message(self, *a): pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if "BADJSON" in text: content = "Sure! The query is about archives."
        elif "EMPTY" in text: content = ""
        elif "NOKEY" in text: content = '{"question": "Which records were destroyed?"}'
        else:
            pid = text.split("passage ")[1].split()[0] if "passage " in text else "x"
            key = pid if pid == "x" else f"{pid}{body.get('seed')}"  # distinct per passage and seed; "x": one query
            h = hashlib.md5(key.encode()).hexdigest()
            content = json.dumps({"query": f"Which disposal approvals cover {' '.join(h[i:i + 5] for i in range(0, 25, 5))}?"})
        time.sleep(self.delay)
        out = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": content}}],
                          "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _corpus(path: Path, n: int, markers: dict | None = None) -> Path:
    "A corpus.jsonl of n passages `P000#0 …` (already chunked, so no tokenizer is needed)."
    markers = markers or {}
    recs = [{"id": f"P{i:03d}#0", "doc_id": f"P{i:03d}", "chunk": 0, "title": f"File {i}", "series": "Minutes",
             "text": f"{markers.get(i, '')} Minutes of archival passage P{i:03d}#0 on the disposal of case files "
                     f"from box {i}, approved by the records committee."} for i in range(n)]
    write_jsonl(recs, path)
    return path


# ---------------------------------------------------------------- malformed replies, the key, the CLI
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

    # rerun: everything is done (failures included) ... unless asked to retry them
    assert main(["gen-query", "--input_file", str(corpus), "--output_file", str(out), "--failures_file", str(fail),
                 "--base_url", fake_server, "--model", "fake"]) == 0
    assert "6 skipped" in capsys.readouterr().out and len(read_jsonl(out)) == 3
    s = generate_queries(corpus, out, llm=get_llm(base_url=fake_server, model="fake"), failures_file=fail,
                         retry_failed=True, verbose=False)
    assert s["skipped"] == 3 and s["failed"] == 3 and len(read_jsonl(fail)) == 3


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


def test_cli_help_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gen_query_cli(["--help"])
    help_text = capsys.readouterr().out
    for flag in ["--input_file", "--output_file", "--backend", "--model", "--base_url", "--concurrency",
                 "--queries_per_passage", "--prompt_file", "--failures_file", "--limit"]:
        assert flag in help_text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "trunc\n')
    assert main(["gen-query", "--input_file", str(bad), "--output_file", str(tmp_path / "q.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.jsonl:2" in err


# ---------------------------------------------------------------- SIGKILL midway, rerun, every passage exactly once
def test_sigkill_and_resume(fake_server, tmp_path):
    n = 40
    corpus = _corpus(tmp_path / "corpus.jsonl", n)
    out = tmp_path / "q.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "import sys; from archivesrag.pipeline import main; sys.exit(main())", "gen-query",
           "--input_file", str(corpus), "--output_file", str(out), "--base_url", fake_server, "--model", "fake",
           "--concurrency", "1"]
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


def test_local_backend_on_sample_slice(sample_slice, tmp_path):
    llm = get_llm("local")
    s = generate_queries(sample_slice, tmp_path / "q.jsonl", llm=llm, max_passage_words=60, verbose=False)
    recs = read_jsonl(tmp_path / "q.jsonl") if (tmp_path / "q.jsonl").stat().st_size else []
    assert s["done"] == len(recs) >= 1 and s["done"] + s["failed"] + s["filtered"] == len(sample_slice)
    _valid(recs, list(sample_slice))
    assert s["usage"]["requests"] >= len(sample_slice) and s["cost_usd"] is None


def test_openai_backend_on_sample_slice(llama_server, sample_slice, tmp_path):
    llm = get_llm("openai", model="smollm2", base_url=llama_server, concurrency=2)
    s = generate_queries(sample_slice, tmp_path / "q.jsonl", llm=llm, prompt=FEW_SHOT_PROMPT,
                         examples=FEW_SHOT_EXAMPLES, max_passage_words=60, verbose=False)
    recs = read_jsonl(tmp_path / "q.jsonl") if (tmp_path / "q.jsonl").stat().st_size else []
    assert s["done"] == len(recs) >= 1 and s["done"] + s["failed"] + s["filtered"] == len(sample_slice)
    _valid(recs, list(sample_slice))
    assert s["llm"].startswith("openai:smollm2")


def test_openai_default_prompt_is_the_seeds():
    from archivesrag.queries import default_prompt
    from archivesrag.llm import OpenAILLM
    assert default_prompt(OpenAILLM(base_url="http://127.0.0.1:1/v1")) == (QUERY_PROMPT, [])
    assert QUERY_PROMPT.startswith("You are a smart and helpful assistant.\n    Your mission is")


def test_sample_queries_cover_the_sample_archive():
    sq = load_sample_queries()
    ds = load_sample(verbose=False)
    text = dict(zip(ds["id"], ds["text"]))
    ids = [r["id"] for r in sq]
    assert len(ids) == len(set(ids)) and len(ids) >= 0.8 * len(ds)
    for r in sq:
        assert r["positive"] == [text[r["id"]]] and r["query"].strip()
