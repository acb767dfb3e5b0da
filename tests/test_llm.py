"""archivesrag.llm: the local backend in-process, the openai backend through the real client against llama.cpp's server."""
import json
import socket

import pytest

from archivesrag.corpus import InputError
from archivesrag.llm import ChatReply, LocalLLM, OpenAILLM, default_backend, extract_json, get_llm, scrub

SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "maxLength": 200}}, "required": ["query"]}
CONVS = [
    [{"role": "user", "content": "Write a search query about retention schedules for payroll records."}],
    [{"role": "user", "content": "Write a search query about fixity checks of digitised maps."}],
]


@pytest.fixture(scope="module")
def local_llm():
    return get_llm("local")


def test_local_backend_chat_json(local_llm):
    assert isinstance(local_llm, LocalLLM) and local_llm.name.startswith("local:")
    assert local_llm.context_window >= 4096
    replies = local_llm.chat(CONVS, max_tokens=64, json_schema=SCHEMA, seed=0)
    assert len(replies) == 2 and all(isinstance(r, ChatReply) for r in replies)
    for r in replies:
        assert r.error is None, r.error
        assert isinstance(json.loads(r.text)["query"], str)  # grammar-constrained: valid JSON
        assert r.prompt_tokens > 0 and r.completion_tokens > 0
    u = local_llm.usage
    assert u["requests"] >= 2 and u["errors"] == 0 and u["prompt_tokens"] >= sum(r.prompt_tokens for r in replies)


def test_local_failure_is_a_reply_not_an_exception(local_llm):
    too_long = [{"role": "user", "content": "fonds " * 6000}]
    bad, ok = local_llm.chat([too_long, [{"role": "user", "content": "Say OK."}]], max_tokens=4)
    assert bad.error and "context window" in bad.error and bad.text == ""
    assert ok.error is None
    assert local_llm.count_tokens("Port Alder building permits") > 2


def test_openai_backend_against_llama_server(llama_server):
    llm = get_llm(base_url=llama_server, model="smollm2", concurrency=2)  # no backend named: base_url -> openai
    assert isinstance(llm, OpenAILLM)
    replies = llm.chat(CONVS, max_tokens=64, json_schema=SCHEMA, seed=0)
    for r in replies:
        assert r.error is None, r.error
        assert isinstance(extract_json(r.text)["query"], str)
        assert r.prompt_tokens > 0
    assert llm.usage["requests"] == 2 and llm.usage["errors"] == 0
    assert llm.estimated_cost() is None  # a local server costs nothing we know of
    plain = llm.chat([[{"role": "user", "content": "Say hello."}]], max_tokens=8)[0]
    assert plain.error is None and plain.text


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_errors_are_replies_and_never_show_the_key(monkeypatch, capsys):
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    llm = get_llm("openai", base_url=f"http://127.0.0.1:{_closed_port()}/v1", max_retries=0, timeout=3)
    replies = llm.chat(CONVS, max_tokens=8)
    assert all(r.error for r in replies)  # nobody listens there: connection errors, as replies
    assert llm.usage["errors"] == 2
    out = capsys.readouterr()
    assert secret not in out.out + out.err + repr(llm) + "".join(r.error for r in replies)
    assert secret not in scrub(f"Incorrect API key provided: {secret}")


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


def test_extract_json():
    assert extract_json('```json\n{"query": "a"}\n```') == {"query": "a"}
    assert extract_json('Here: {"query": "b"} done') == {"query": "b"}
    assert extract_json("[1, 2]") is None and extract_json('{"query": "cut') is None and extract_json(None) is None
