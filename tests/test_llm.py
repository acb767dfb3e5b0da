"""archivesrag.llm: the local backend in-process, the openai backend through the real client against llama.cpp's server.

Nothing here depends on one build's exact completion: llama-cpp-python is compiled for the host CPU and a 135M
model's greedy text changes with the CPU and the thread count. The tests assert what holds on every machine —
shapes, types, that a reply under a grammar that must end is valid JSON, that a reply which cannot end within
`max_tokens` is reported as cut. Run them at 1 and 2 threads: `ARCHIVESRAG_LLM_THREADS=1 pytest tests/test_llm.py`."""
import httpx
import pytest
from common import free_port  # bench/common.py (conftest puts bench/ on sys.path): a port nothing listens on

from archivesrag.core import InputError
from archivesrag.llm import (LLM_THREADS_ENV, ChatReply, LocalLLM, OpenAILLM, cut_reply, default_backend, extract_json,
                             get_llm, llm_threads, scrub)

# maxLength bounds the reply: 40 characters are at most 240 tokens (a token is >= 1 byte, an escaped character <= 6),
# plus the braces and the key, so max_tokens=256 cannot be reached and every reply under the grammar finishes
SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "maxLength": 40}}, "required": ["query"]}
# and this one cannot finish in 8 tokens, whatever the model writes: at least 300 characters inside the string
MUST_RUN_LONG = {"type": "object", "properties": {"text": {"type": "string", "minLength": 300}}, "required": ["text"]}
CONVS = [
    [{"role": "user", "content": "Write a search query about retention schedules for payroll records."}],
    [{"role": "user", "content": "Write a search query about fixity checks of digitised maps."}],
]


@pytest.fixture(scope="module")
def local_llm():
    return get_llm("local")


@pytest.mark.timeout(30)
def test_local_backend_chat_json(local_llm):
    assert isinstance(local_llm, LocalLLM) and local_llm.name.startswith("local:")
    assert local_llm.context_window >= 4096
    replies = local_llm.chat(CONVS, max_tokens=256, json_schema=SCHEMA, seed=0)
    assert len(replies) == 2 and all(isinstance(r, ChatReply) for r in replies)
    for r in replies:
        assert r.error is None and r.ok and r.finish_reason == "stop", (r.error, r.text)
        assert isinstance(extract_json(r.text)["query"], str)  # grammar-constrained and finished: JSON (raw newlines allowed)
        assert r.prompt_tokens > 0 and 0 < r.completion_tokens < 256
    u = local_llm.usage
    assert u["requests"] >= 2 and u["prompt_tokens"] >= sum(r.prompt_tokens for r in replies)


@pytest.mark.timeout(30)
def test_a_reply_cut_by_the_token_limit_is_a_failure(local_llm):
    errors = local_llm.usage["errors"]
    r = local_llm.chat([[{"role": "user", "content": "Describe a fonds."}]], max_tokens=8, json_schema=MUST_RUN_LONG)[0]
    assert r.finish_reason == "length" and not r.ok
    assert r.error == "cut by the token limit (max_tokens=8)"
    assert r.text and extract_json(r.text) is None and r.completion_tokens <= 8  # the cut text is kept, not passed as JSON
    assert local_llm.usage["errors"] == errors + 1
    assert cut_reply(ChatReply(text="Ten years.", finish_reason="stop"), 8).ok


@pytest.mark.timeout(30)
def test_local_sampling_settings(local_llm):
    r = local_llm.chat([[{"role": "user", "content": "List three kinds of archival records, one per line."}]],
                       max_tokens=32, temperature=0.7, top_p=0.9, stop=["\n"], repeat_penalty=1.2, seed=1)[0]
    assert isinstance(r.text, str) and r.finish_reason in ("stop", "length")
    assert "\n" not in r.text  # generation ends at a stop sequence, which is not part of the reply


@pytest.mark.timeout(30)
def test_local_failure_is_a_reply_not_an_exception(local_llm):
    too_long = [{"role": "user", "content": "fonds " * 6000}]
    bad, ok = local_llm.chat([too_long, [{"role": "user", "content": "Say OK."}]], max_tokens=4)
    assert bad.error and "context window" in bad.error and bad.text == ""
    assert isinstance(ok.text, str) and (ok.ok or ok.finish_reason == "length")
    assert local_llm.count_tokens("Port Alder building permits") > 2


@pytest.mark.fast
def test_thread_count_is_settable(monkeypatch):
    monkeypatch.setenv(LLM_THREADS_ENV, "1")
    assert llm_threads() == 1 and llm_threads(3) == 3
    assert get_llm("local").n_threads == 1
    monkeypatch.setenv(LLM_THREADS_ENV, "many")
    with pytest.raises(InputError, match=LLM_THREADS_ENV):
        get_llm("local")
    monkeypatch.delenv(LLM_THREADS_ENV)
    assert 1 <= llm_threads() <= 4
    with pytest.raises(InputError, match="n_threads"):
        llm_threads(0)


@pytest.mark.timeout(180)
def test_openai_backend_against_llama_server(llama_server):
    llm = get_llm(base_url=llama_server, model="smollm2", concurrency=2)  # no backend named: base_url -> openai
    assert isinstance(llm, OpenAILLM)
    replies = llm.chat(CONVS, max_tokens=256, json_schema=SCHEMA, seed=0)
    for r in replies:
        assert r.error is None and r.finish_reason == "stop", r.error
        assert isinstance(extract_json(r.text)["query"], str)
        assert r.prompt_tokens > 0
    assert llm.usage["requests"] == 2 and llm.usage["errors"] == 0
    assert llm.estimated_cost() is None  # a local server costs nothing we know of
    cut = llm.chat([[{"role": "user", "content": "Describe a fonds."}]], max_tokens=8, json_schema=MUST_RUN_LONG)[0]
    assert cut.finish_reason == "length" and cut.error == "cut by the token limit (max_tokens=8)"
    plain = llm.chat([[{"role": "user", "content": "List three kinds of records, one per line."}]], max_tokens=32,
                     temperature=0.8, top_p=0.95, stop=["\n"], repeat_penalty=1.2, seed=0)[0]
    assert isinstance(plain.text, str) and "\n" not in plain.text  # stop, top_p and repeat_penalty reach the server
    assert plain.ok or plain.finish_reason == "length"




@pytest.mark.fast
def test_openai_retries_are_the_clients_own():
    attempts = []
    http = httpx.Client(event_hooks={"request": [lambda request: attempts.append(request.url)]})
    llm = get_llm("openai", model="none", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=2, timeout=3,
                  http_client=http)
    r = llm.chat([[{"role": "user", "content": "Say OK."}]], max_tokens=4, json_schema=SCHEMA)[0]
    assert len(attempts) == 3  # one request and the client's 2 retries (with backoff); no second request of ours
    assert not r.ok and "\n" not in r.error
    assert r.error.startswith("APIConnectionError") and "after 2 retries" in r.error and "127.0.0.1" in r.error


@pytest.mark.timeout(180)
def test_openai_timeout_is_an_error_not_a_hang(llama_server):
    llm = get_llm(base_url=llama_server, model="smollm2", timeout=0.001, max_retries=1)
    assert llm.client.timeout == 0.001
    r = llm.chat([[{"role": "user", "content": "Write a long essay about archives."}]], max_tokens=64)[0]
    assert not r.ok and r.error.startswith("APITimeoutError") and "timed out" in r.error and "after 1 retries" in r.error
    with pytest.raises(InputError, match="timeout"):
        get_llm(base_url=llama_server, timeout=0)
    with pytest.raises(InputError, match="timeout"):
        get_llm("local", timeout=5)


@pytest.mark.fast
def test_openai_errors_are_replies_and_never_show_the_key(monkeypatch, capsys):
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    llm = get_llm("openai", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout=3)
    replies = llm.chat(CONVS, max_tokens=8)
    assert all(r.error for r in replies)  # nobody listens there: connection errors, as replies
    assert llm.usage["errors"] == 2
    out = capsys.readouterr()
    assert secret not in out.out + out.err + repr(llm) + "".join(r.error for r in replies)
    assert secret not in scrub(f"Incorrect API key provided: {secret}")


@pytest.mark.fast
def test_backend_choice(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert default_backend() == "local"
    assert default_backend("http://127.0.0.1:8000/v1") == "openai"
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        get_llm("openai")
    with pytest.raises(InputError, match="unknown LLM backend"):
        get_llm("llamafile")
    with pytest.raises(InputError, match="base_url"):
        get_llm("local", base_url="http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefghijkl")
    assert default_backend() == "openai"
    assert OpenAILLM().context_window == 128000 and OpenAILLM().model == "gpt-4o"
    assert OpenAILLM().client.max_retries == 3 and OpenAILLM(timeout=7).client.timeout == 7


@pytest.mark.fast
def test_extract_json():
    assert extract_json('```json\n{"query": "a"}\n```') == {"query": "a"}
    assert extract_json('Here: {"query": "b"} done') == {"query": "b"}
    assert extract_json('{"query": "fonds\nlevel"}') == {"query": "fonds\nlevel"}  # llama.cpp's grammar allows raw newlines
    assert extract_json("[1, 2]") is None and extract_json('{"query": "cut') is None and extract_json(None) is None
