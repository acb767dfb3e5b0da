"""Make saved notebook outputs fit for the docs site: no progress bars, no library warnings, no machine paths.

    python tools/clean_outputs.py nbs/*.ipynb

`make outputs` runs it after re-running the notebooks. A stderr output made only of progress bars or of warnings
raised inside installed libraries is dropped; in what remains, this checkout's path, the virtual environment's
site-packages and the home folder are written the way a reader's machine would show them, and a temporary
folder (new on every run) as `<tmp>`.
"""
import json
import re
import site
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAR = re.compile(r"\d+%\|| examples/s\]|it/s\]|s/it\]")  # tqdm and datasets progress bars
LIBRARY_WARNING = re.compile(r"site-packages/\S+:\d+: \w*Warning")


def _replacements() -> list[tuple[str, str]]:
    pairs = [(p, "<site-packages>") for p in site.getsitepackages() + [site.getusersitepackages()]]
    pairs += [(str(REPO / "nbs") + "/", ""), (str(REPO) + "/", "../"), (str(REPO), ".."), (str(Path.home()), "~")]
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: site-packages lies inside the checkout's .venv


# new on every run; "…/" is how the package's messages shorten a long path
TEMP_DIR = re.compile(r"(?:" + re.escape(tempfile.gettempdir()) + r"|…)/(?:tmp|archivesrag-)[\w-]+"
                      r"|(?<![\w/.])tmp[a-z0-9_]{8}(?=/)")  # or cut to its last parts: tmpab12cd34/model


def clean_text(text: str, pairs) -> str:
    for old, new in pairs: text = text.replace(old, new)
    return TEMP_DIR.sub("<tmp>", text)


LOG_LINE = re.compile(r"^\d\d/\d\d/\d{4} [\d:]+ - (INFO|WARNING) - ")  # a library's logging (FlagEmbedding's runner)


def clean_stderr(text: str) -> str:
    "stderr without progress bars, library warnings (and the source line Python prints under each) or library logs."
    kept, skip_next = [], False
    for line in text.split("\n"):
        line = line.split("\r")[-1]  # what a terminal would show: the last redraw of a progress bar
        if skip_next and line.startswith("  "): skip_next = False; continue
        skip_next = False
        if LIBRARY_WARNING.search(line): skip_next = True; continue
        if BAR.search(line) or LOG_LINE.search(line) or not line.strip(): continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def clean_notebook(path: Path, pairs) -> int:
    nb = json.loads(path.read_text())
    changed = 0
    for cell in nb["cells"]:
        outs = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o["text"])
                new = clean_stderr(text)
                if new != text: changed += 1; o["text"] = new.splitlines(keepends=True)
                if not new: continue
            outs.append(o)
        for o in outs:
            if "text" in o:
                new = [clean_text(t, pairs) for t in ([o["text"]] if isinstance(o["text"], str) else o["text"])]
                changed += new != o["text"]; o["text"] = new
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in o.get("data", {}):
                    old = o["data"][kind]
                    new = [clean_text(t, pairs) for t in ([old] if isinstance(old, str) else old)]
                    changed += new != o["data"][kind]; o["data"][kind] = new
        if "outputs" in cell: cell["outputs"] = outs
    if changed: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


if __name__ == "__main__":
    pairs = _replacements()
    for name in sys.argv[1:]:
        n = clean_notebook(Path(name), pairs)
        if n: print(f"{name}: {n} outputs cleaned")
