"""Helpers shared by the test files (pytest puts this folder on sys.path)."""
import subprocess
import sys


def run_cli(*args, cwd=None, timeout=600):
    "Run `archivesrag ARGS…` in a fresh process, as a user would; returns the CompletedProcess."
    code = "import sys; from archivesrag.pipeline import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
