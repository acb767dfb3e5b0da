"""Helpers shared by the test files (pytest puts this folder on sys.path)."""
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

CLI_CODE = "import sys; from archivesrag.cli import main; sys.exit(main(sys.argv[1:]))"
"`python -c CLI_CODE ARGS…` is the `archivesrag` console script, in a fresh process."


def run_cli(*args, cwd=None, timeout=600, fresh=False) -> subprocess.CompletedProcess:
    """`archivesrag ARGS…` as a user runs it: its exit status, stdout and stderr, as a `subprocess.CompletedProcess`.

    By default in this process: `archivesrag.cli.main(ARGS)`, which the console script calls, run in `cwd` with
    stdout and stderr captured; argparse's exit keeps its status, and an uncaught exception is printed as Python
    prints it, with status 1. The command is the same; what is saved is the 5-8 s of imports that a fresh process
    pays on each call (and the bundled models stay loaded). `fresh=True` starts a new Python process instead: for
    what only a process shows (its own locks, signals, command-line bytes, two runs at once). `timeout` bounds a
    fresh process; in this process a hang is stopped by the test's `@pytest.mark.timeout`."""
    if fresh:
        argv = [a if isinstance(a, bytes) else str(a) for a in args]
        return subprocess.run([sys.executable, "-c", CLI_CODE, *argv], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout)
    from archivesrag.cli import main
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main(argv)
        except SystemExit as e:  # argparse: --help (0), a usage error (2)
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else (print(e.code, file=sys.stderr) or 1)
        except Exception:
            traceback.print_exc(); code = 1
    return subprocess.CompletedProcess(["archivesrag", *argv], code or 0, out.getvalue(), err.getvalue())


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


class _TestServer(ThreadingHTTPServer):
    daemon_threads, block_on_close = True, False  # a reply still sleeping in a handler does not hold the test up

    def handle_error(self, request, client_address):
        "A client that gave up (a timeout test) is expected: said nowhere. Anything else goes to the real stderr, never"
        " into the output of a command that `run_cli` captures in this process."
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            traceback.print_exc(file=sys.__stderr__)


@contextmanager
def http_server(handler_cls):
    "Serve `handler_cls` on 127.0.0.1 from a thread: a small real server for the replies llama.cpp will not give."
    srv = _TestServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown(); srv.server_close()


WRITTEN_ARCHIVES = ["ead/written/harbour-board-ead3.xml", "csv/st-brigids-school-atom.csv", "oai/northport-oai-dc.xml"]
"The fixtures we wrote, each with a marker planted in its closed, restricted, staff-only and unpublished units."


def written_archives_corpus(folder: Path) -> Path:
    "The written fixtures copied into `folder/aids` and loaded by `archivesrag corpus`, as a user would: `corpus.jsonl`."
    import shutil
    from archivesrag.archives import archives_path
    (folder / "aids").mkdir()
    for f in WRITTEN_ARCHIVES: shutil.copy(archives_path(f), folder / "aids")
    run = run_cli("corpus", "--input_file", folder / "aids", "--output_file", folder / "corpus.jsonl")
    assert run.returncode == 0, run.stderr
    return folder / "corpus.jsonl"
