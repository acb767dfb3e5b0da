"""Red-team round 3, bad and edge inputs of `corpus`, `gen-query`, `ask` and the LLM boundary (00_corpus, 00b_llm,
01_queries): each row of `shared/redteam/probes-round3.md` named in a test's comment, run as the real command.

What every refusal must be: exit status 2, one line on stderr that names the file (and line) or the flag, no
traceback, and nothing written or changed. The OpenAI-compatible server here is a small real one on 127.0.0.1 that
misbehaves on purpose (it echoes the API key in its replies) and counts the requests it gets."""
import hashlib
import importlib.util
import json
import os
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from archivesrag.core import InputError, read_jsonl, write_jsonl
from archivesrag.corpus import load_corpus, sample_path
from helpers import http_server, reply_chat_completion, run_cli

pytestmark = pytest.mark.timeout(120)  # a real server on 127.0.0.1: a request that hangs fails the test, not the run
KEY = "KEY-test-SECRET-0123456789"  # not shaped like "sk-…": only the OPENAI_API_KEY rule of `scrub` can catch it


# ---------------------------------------------------------------- a server that echoes the key
class _EchoKey(BaseHTTPRequestHandler):
    "POST …/chat/completions: a good reply that quotes the bearer token it was sent (KEY3, KEY6)."
    requests = 0

    def log_message(self, *a): pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests += 1
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        pid = text.split("passage ")[1].split()[0] if "passage " in text else "x"
        words = " ".join(hashlib.md5(pid.encode()).hexdigest()[i:i + 5] for i in range(0, 25, 5))  # distinct queries
        content = json.dumps({"query": f"Which disposal approvals {words} were signed with key {key}?"})
        reply_chat_completion(self, body["model"], content)


@pytest.fixture(scope="module")
def server():
    with http_server(_EchoKey) as url: yield url


def _corpus(path: Path, n: int = 3) -> Path:
    "A corpus.jsonl of n passages, already chunked."
    write_jsonl([{"id": f"P{i:03d}#0", "doc_id": f"P{i:03d}", "title": f"File {i}",
                  "text": f"Minutes of archival passage P{i:03d}#0 on the disposal of case files from box {i}."}
                 for i in range(n)], path)
    return path


def _refused(r, *says: str, cmd: str) -> str:
    "The one stderr line of a refusal, checked: exit 2, no traceback, and it says each of `says`."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])
    assert lines[0].startswith(f"archivesrag {cmd}: error: "), lines[0]
    for s in says: assert s in lines[0], (s, lines[0])
    return lines[0]


# ---------------------------------------------------------------- corpus
@pytest.mark.fast
def test_csv_with_an_unclosed_quote_is_refused_at_its_line(tmp_path):  # C35
    (tmp_path / "unclosed.csv").write_text('id,title,text\n1,A,"hello\n2,B,world\n3,C,again\n')
    r = run_cli("corpus", "--input_file", "unclosed.csv", "--output_file", "out.jsonl", cwd=tmp_path)
    _refused(r, "unclosed.csv:2: malformed CSV", "never closed", cmd="corpus")
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "after.csv").write_text('id,title,text\n1,A,"quoted" and more\n')  # text after a closing quote
    _refused(run_cli("corpus", "--input_file", "after.csv", "--output_file", "out.jsonl", cwd=tmp_path),
             "after.csv:2: malformed CSV", cmd="corpus")
    (tmp_path / "good.csv").write_text('id,title,text\n1,A,"two\nlines, one field"\n2,B,plain\n')  # C32 stays held
    r = run_cli("corpus", "--input_file", "good.csv", "--output_file", "out.jsonl", "--max_tokens", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [d["text"] for d in read_jsonl(tmp_path / "out.jsonl")] == ["two\nlines, one field", "plain"]


@pytest.mark.fast
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_refused_as_input_and_as_output(tmp_path, server):  # O08
    os.mkfifo(tmp_path / "pipe.jsonl")
    r = run_cli("corpus", "--input_file", "pipe.jsonl", "--output_file", "out.jsonl", cwd=tmp_path, timeout=120)
    _refused(r, "pipe.jsonl: not a regular file", cmd="corpus")
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "Minutes of the board."}\n')
    r = run_cli("corpus", "--input_file", "docs.jsonl", "--output_file", "pipe.jsonl", cwd=tmp_path, timeout=120)
    _refused(r, "pipe.jsonl: not a regular file", cmd="corpus")
    _corpus(tmp_path / "corpus.jsonl")
    r = run_cli("gen-query", "--input_file", "corpus.jsonl", "--output_file", "pipe.jsonl", "--base_url", server,
                "--model", "fake", cwd=tmp_path, timeout=120)
    _refused(r, "pipe.jsonl: not a regular file", cmd="gen-query")


@pytest.mark.fast
def test_a_document_over_the_size_limit_is_refused_by_line(tmp_path):  # C37
    from archivesrag.corpus import MAX_DOCUMENT_CHARS
    big = "fonds " * (MAX_DOCUMENT_CHARS // 6 + 1)
    with open(tmp_path / "huge.jsonl", "w") as f:
        f.write(json.dumps({"id": "small", "text": "Minutes."}) + "\n" + json.dumps({"id": "big", "text": big}) + "\n")
    r = run_cli("corpus", "--input_file", "huge.jsonl", "--output_file", "out.jsonl", cwd=tmp_path)
    _refused(r, "huge.jsonl:2: the text is", f"over the limit of {MAX_DOCUMENT_CHARS:,}", cmd="corpus")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.fast
@pytest.mark.parametrize("args,says", [
    (["--max_tokens", "10", "--overlap", "-5"], "--overlap must be 0 or more, not -5"),                    # N02
    (["--max_tokens", "-5", "--overlap", "-10"], "--max_tokens must be 0 (no chunking) or more, not -5"),  # N07
    (["--max_tokens", "16", "--overlap", "16"], "--overlap (16) must be smaller than --max_tokens (16)"),
])
def test_chunking_settings_out_of_range_are_refused(tmp_path, args, says):  # N02, N07
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "Minutes of the board."}\n')
    r = run_cli("corpus", "--input_file", "docs.jsonl", "--output_file", "new/out.jsonl", *args, cwd=tmp_path)
    _refused(r, says, cmd="corpus")
    assert not (tmp_path / "new").exists()  # refused before the output folder was made


@pytest.mark.fast
def test_max_tokens_zero_still_means_no_chunking(tmp_path):  # N02/N07 counter-case, as documented
    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "a", "text": "fonds " * 600}) + "\n")
    r = run_cli("corpus", "--input_file", "docs.jsonl", "--output_file", "out.jsonl", "--max_tokens", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [p["id"] for p in read_jsonl(tmp_path / "out.jsonl")] == ["a"]


# ---------------------------------------------------------------- gen-query: settings, before anything runs
@pytest.mark.fast
@pytest.mark.parametrize("args,says", [
    (["--concurrency", "-3"], "--concurrency must be a whole number of at least 1, not -3"),  # G02
    (["--concurrency", "0"], "--concurrency must be"),
    (["--queries_per_passage", "0"], "--queries_per_passage must be at least 1, not 0"),     # G05
    (["--queries_per_passage", "-2"], "--queries_per_passage must be at least 1"),
    (["--max_tokens", "0"], "--max_tokens must be at least 1, not 0"),                       # G06
    (["--max_tokens", "-5"], "--max_tokens must be at least 1, not -5"),                     # G07
    (["--max_passage_words", "-5"], "--max_passage_words must be at least 1, not -5"),       # G17
    (["--max_passage_words", "0"], "--max_passage_words must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1 (got 0)"),
    (["--limit", "-1"], "--limit must be at least 1 (got -1)"),
    (["--model", ""], "--model is empty"),
    (["--model", "  "], "--model is empty"),
    (["--timeout", "nan"], "--timeout must be a positive number of seconds, not nan"),       # cf. A08
    (["--timeout", "-1"], "--timeout must be a positive number"),
    (["--temperature", "nan"], "--temperature must be between 0 and 2, not nan"),
    (["--temperature", "-1"], "--temperature must be between 0 and 2"),
    (["--max_copy", "nan"], "--max_copy must be between 0 and 1, not nan"),
    (["--min_words", "-1"], "--min_words must be 0 or more"),
])
def test_gen_query_settings_are_refused_before_any_request(tmp_path, server, args, says):
    _corpus(tmp_path / "corpus.jsonl")
    before = _EchoKey.requests
    r = run_cli("gen-query", "--input_file", "corpus.jsonl", "--output_file", "q/q.jsonl", "--base_url", server,
                "--model", "fake", *args, cwd=tmp_path)
    _refused(r, says, cmd="gen-query")
    assert _EchoKey.requests == before and not (tmp_path / "q").exists()  # no request, no folder, no file


@pytest.mark.fast
@pytest.mark.parametrize("base_url", ["", "127.0.0.1:8000/v1", "ftp://127.0.0.1/v1"])
def test_a_base_url_that_is_not_a_url_is_refused(tmp_path, base_url):
    _corpus(tmp_path / "corpus.jsonl")
    r = run_cli("gen-query", "--input_file", "corpus.jsonl", "--output_file", "q.jsonl", "--base_url", base_url,
                cwd=tmp_path)
    _refused(r, "--base_url must be an http:// or https:// URL", cmd="gen-query")
    assert not (tmp_path / "q.jsonl").exists()


@pytest.mark.fast
def test_local_backend_max_tokens_is_refused_before_the_model_loads(tmp_path):  # G08
    _corpus(tmp_path / "corpus.jsonl")
    r = run_cli("gen-query", "--input_file", "corpus.jsonl", "--output_file", "q.jsonl", "--backend", "local",
                "--max_tokens", "-5", "--limit", "2", cwd=tmp_path)
    _refused(r, "--max_tokens must be at least 1, not -5", cmd="gen-query")
    assert not (tmp_path / "q.jsonl").exists()


@pytest.mark.fast
def test_the_llm_boundary_refuses_a_max_tokens_below_one():  # G08, for callers of the API
    from archivesrag.llm import get_llm
    llm = get_llm(base_url="http://127.0.0.1:9/v1", model="fake")  # no request is made: refused first
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="max_tokens must be a whole number of at least 1"):
            llm.chat([[{"role": "user", "content": "Say OK."}]], max_tokens=bad)
    assert llm.usage["requests"] == 0


@pytest.mark.fast
@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_what_to_install(tmp_path):  # G14
    _corpus(tmp_path / "corpus.jsonl")
    r = run_cli("gen-query", "--input_file", "corpus.jsonl", "--output_file", "q.jsonl", "--backend", "vllm",
                "--limit", "1", cwd=tmp_path)
    _refused(r, "the vllm backend needs the vllm package", "pip install vllm", cmd="gen-query")
    assert not (tmp_path / "q.jsonl").exists()


# ---------------------------------------------------------------- gen-query: files that are not ours
@pytest.mark.fast
def test_a_data_file_as_failures_file_is_refused_untouched(tmp_path, server):  # G18, G20
    corpus = _corpus(tmp_path / "corpus.jsonl")
    other = tmp_path / "corpus_copy.jsonl"
    other.write_bytes(corpus.read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"call the records office")  # one line, no newline: once cut off as "a partial last line"
    for target, says in [(other, "corpus_copy.jsonl:1: the record has no 'reason'"), (notes, "notes.txt:1: not JSON")]:
        before = target.read_bytes()
        for extra in ([], ["--limit", "1"]):
            r = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q.jsonl", "--failures_file",
                        target, "--base_url", server, "--model", "fake", *extra, cwd=tmp_path)
            _refused(r, says, "not a failures file", "--failures_file", cmd="gen-query")
            assert target.read_bytes() == before


@pytest.mark.fast
def test_a_corpus_as_output_file_is_refused_untouched(tmp_path, server):  # G19
    corpus = _corpus(tmp_path / "corpus.jsonl")
    other = _corpus(tmp_path / "other_corpus.jsonl", 5)
    before, requests = other.read_bytes(), _EchoKey.requests
    r = run_cli("gen-query", "--input_file", corpus, "--output_file", other, "--base_url", server, "--model", "fake",
                cwd=tmp_path)
    _refused(r, "other_corpus.jsonl:1: the record has no 'query', 'positive'", "not a queries file", "--output_file",
             cmd="gen-query")
    assert other.read_bytes() == before and _EchoKey.requests == requests


@pytest.mark.fast
def test_a_hard_link_to_the_input_is_refused_as_output(tmp_path, server):
    corpus = _corpus(tmp_path / "corpus.jsonl")
    os.link(corpus, tmp_path / "alias.jsonl")
    before = corpus.read_bytes()
    r = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "alias.jsonl", "--base_url", server,
                "--model", "fake", cwd=tmp_path)
    _refused(r, "--output_file is the input file", cmd="gen-query")
    assert corpus.read_bytes() == before


@pytest.mark.fast
def test_a_second_writer_through_a_symlink_is_refused(tmp_path, server):  # CW4
    from archivesrag.core import output_lock
    corpus, real = _corpus(tmp_path / "corpus.jsonl"), tmp_path / "q.jsonl"
    (tmp_path / "alias.jsonl").symlink_to(real)
    with output_lock(real):  # the first writer, here in this process: flock is per open file, not per process
        r = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "alias.jsonl", "--base_url",
                    server, "--model", "fake", cwd=tmp_path)
    _refused(r, "another run is writing this file", cmd="gen-query")
    assert not real.exists() or real.read_text() == ""
    r = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "alias.jsonl", "--base_url", server,
                "--model", "fake", cwd=tmp_path)  # the lock released, the same command runs
    assert r.returncode == 0, r.stderr
    assert sorted(q["id"] for q in read_jsonl(real)) == ["P000#0", "P001#0", "P002#0"]
    assert not (tmp_path / "q.jsonl.lock").exists() and not (tmp_path / "alias.jsonl.lock").exists()


# ---------------------------------------------------------------- the key in a successful reply
@pytest.mark.fast
def test_a_key_echoed_in_a_reply_never_reaches_the_queries_file(tmp_path, server, monkeypatch):  # KEY3
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    corpus = _corpus(tmp_path / "corpus.jsonl")
    r = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q.jsonl", "--base_url", server,
                "--model", "fake", "--max_copy", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "q.jsonl").read_text() + (tmp_path / "q.failures.jsonl").read_text()
    queries = [q["query"] for q in read_jsonl(tmp_path / "q.jsonl")]
    assert len(queries) == 3 and all("with key ***" in q for q in queries)  # the server did echo it, and it was cut
    assert KEY not in written + r.stdout + r.stderr


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    "A small saved search index of 6 documents of the sample archive (the bundled MiniLM)."
    from archivesrag.search import SearchIndex
    d = tmp_path_factory.mktemp("redteam_index")
    write_jsonl(read_jsonl(sample_path())[:6], d / "archive.jsonl")
    return SearchIndex.build(load_corpus(d / "archive.jsonl", verbose=False)).save(d / "index")


@pytest.mark.fast
def test_a_key_echoed_in_an_answer_is_never_printed(tmp_path, server, index_dir, monkeypatch):  # KEY6
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    r = run_cli("ask", "How long are building permit files kept?", "--index_dir", index_dir, "--base_url", server,
                "--model", "fake", "--min_score", "-1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "with key ***" in r.stdout and KEY not in r.stdout + r.stderr


@pytest.mark.fast
@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_ask_with_vllm_missing_says_what_to_install(tmp_path, index_dir):  # A07
    r = run_cli("ask", "How long are building permit files kept?", "--index_dir", index_dir, "--backend", "vllm",
                "--min_score", "-1", cwd=tmp_path)
    _refused(r, "the vllm backend needs the vllm package", "pip install vllm", cmd="ask")


@pytest.mark.fast
def test_ask_with_an_empty_model_is_refused(tmp_path, server, index_dir):
    r = run_cli("ask", "How long are building permit files kept?", "--index_dir", index_dir, "--base_url", server,
                "--model", "", "--min_score", "-1", cwd=tmp_path)
    _refused(r, "--model is empty", cmd="ask")


@pytest.mark.fast
def test_scrub_keeps_words_and_placeholder_keys(monkeypatch):
    from archivesrag.llm import scrub
    monkeypatch.setenv("OPENAI_API_KEY", "none")  # a local server's placeholder: not a secret, and a common word
    assert scrub("none of the risk-assessment-reports") == "none of the risk-assessment-reports"
    assert scrub("key sk-proj-abcdefghijklmnop") == "key sk-***"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert scrub(f"echo {KEY}.") == "echo ***."


# ---------------------------------------------------------------- the API
@pytest.mark.fast
def test_query_messages_with_text_none_names_the_field():  # cf. API12 (rag.format_prompt is 06_rag's)
    from archivesrag.queries import query_messages
    with pytest.raises(InputError, match="'text' must be a string, not NoneType"):
        query_messages(None)
