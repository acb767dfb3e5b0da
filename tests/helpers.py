"""Helpers shared by the test files (pytest puts this folder on sys.path)."""
import json
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


def run_cli(*args, cwd=None, timeout=600):
    "Run `archivesrag ARGS…` in a fresh process, as a user would; returns the CompletedProcess."
    code = "import sys; from archivesrag.pipeline import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def reply_chat_completion(handler, model: str, content: str, finish: str = "stop") -> None:
    "Answer an OpenAI chat request from an `http.server` handler with one `chat.completion` holding `content`."
    out = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
                      "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
                      "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(out)))
    handler.end_headers()
    handler.wfile.write(out)


@contextmanager
def http_server(handler_cls):
    "Serve `handler_cls` on 127.0.0.1 from a thread: a small real server for the replies llama.cpp will not give."
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally: srv.shutdown()
