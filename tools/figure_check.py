"""Check that every figure quoted in a notebook's prose matches the output it reads.

    python tools/figure_check.py nbs/*.ipynb      # lists stale figures, exit 1 if any

Outputs move on every re-run (a small model's completions, training, timings), and hand-written prose cannot follow.
So a markdown cell may quote a figure only when the cells it reads show it. A *figure* is a decimal number (0.830),
a percentage (45%), a fraction (26/31), or a number with a unit of time, size or speed (16 min, 52.5 MB,
0.45 passages/s). Text in `code`, fenced code, $math$ and link targets is not prose, and neither is a version
(Python 3.10, bge-base-en-v1.5). A figure is *read* from:

- the outputs and source of the code cells directly above the markdown cell (back to the previous markdown cell; a
  markdown cell right after another reads what that one reads), and of the code cell directly below it;
- a committed file the cell names (a path in backticks or a link: `bench/results/text_view.json`).

It matches when a number there rounds to it at the decimals quoted (0.8297 reads as 0.830 or 0.83; 0.45 as 45%).
A reciprocal such as 1/2 is arithmetic, not a figure. An estimate no cell prints (a reading time, a GPU's speed) is
said in words ("about twenty minutes") or taken from a named file.
`tests/test_course.py` runs this on every notebook, so `make test` fails on a stale figure.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
UNIT = (r"(?:ms|s|sec|seconds?|min|minutes?|h|hours?|days?|KB|kB|MB|MiB|GB|GiB|TB"
        r"|(?:passages|samples|queries|docs|tokens|steps|it|examples|units|records)/s)")
FIGURE = re.compile(
    rf"(?P<range>{NUM})\s?[–-]\s?(?={NUM}\s?{UNIT}(?![\w/]))"  # the first number of "15–30 min"
    rf"|(?P<pct>{NUM})\s?%"
    rf"|(?P<frac>\d+)/(?P<den>\d+)(?![\w/.])"
    rf"|(?P<unit>{NUM})\s?{UNIT}(?![\w/])"
    rf"|(?P<dec>\d*\.\d+)")
# a number glued to a word, a path, an identifier (nDCG@10, v1.5, 1e-5) or a version (3.10.2) is not a figure
GLUED_BEFORE = re.compile(r"[A-Za-z_@/\\.#^~=<>-]$")
GLUED_AFTER = re.compile(r"^(?:[A-Za-z_]|\.\d|/\d)")
VERSION_WORDS = {"python", "torch", "pytorch", "transformers", "sentence-transformers", "flagembedding", "nbdev",
                 "faiss", "faiss-cpu", "numpy", "ranx", "bm25s", "llama", "vllm", "cuda", "ead", "ead3", "alto",
                 "version", "versions", "release", "gpt", "quarto", "nbformat", "lxml", "openai", "datasets",
                 "premis", "isad(g)", "oai-pmh", "v", "pip", "ubuntu", "debian", "colab", "jupyter", "macos"}
OUTPUT_NUMBER = re.compile(r"(?<![\w.])[-+−]?(\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?)")
NAMED_FILE = re.compile(r"`([\w./-]+\.(?:json|jsonl|md|csv|txt|tsv))`|\]\(([\w./-]+\.(?:json|jsonl|md|csv|txt|tsv))\)")


@dataclass
class Figure:
    text: str  # as quoted
    value: float
    decimals: int
    kind: str  # dec, pct, frac, unit, range
    den: int | None = None


def prose(md: str) -> str:
    "The prose of a markdown cell: without code, math, HTML comments, images, link targets or bare URLs."
    md = re.sub(r"```.*?```|~~~.*?~~~", " ", md, flags=re.S)
    md = re.sub(r"<!--.*?-->", " ", md, flags=re.S)
    md = re.sub(r"(`+).*?\1", " ", md, flags=re.S)
    md = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", md, flags=re.S)
    md = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", md)
    md = re.sub(r"\]\([^)]*\)", "]", md)
    md = re.sub(r"https?://\S+|<[^>\n]+>", " ", md)
    return md


def _is_version(text: str, start: int) -> bool:
    before = text[max(0, start - 40):start].rstrip().split()
    return bool(before) and before[-1].lower().strip("(,:") in VERSION_WORDS


def figures(md: str) -> list[Figure]:
    "The figures quoted in a markdown cell's prose."
    text, found = prose(md), []
    for m in FIGURE.finditer(text):
        kind = m.lastgroup if m.lastgroup != "den" else "frac"
        token = m.group(kind)
        if GLUED_BEFORE.search(text[:m.start()]) or (kind == "dec" and GLUED_AFTER.match(text[m.end():])):
            continue
        if kind in ("dec", "unit", "range") and _is_version(text, m.start()):
            continue
        if kind == "frac":
            if token == "1": continue  # a reciprocal (1/2, 1/rank) is arithmetic, not a count
            found.append(Figure(m.group(0), float(token), 0, kind, int(m.group("den"))))
            continue
        num = token.replace(",", "")
        decimals = len(num.split(".")[1]) if "." in num else 0
        found.append(Figure(token if kind == "range" else m.group(0).strip(), float(num), decimals, kind))
    return found


def _text(cell: dict, with_source: bool = True) -> str:
    "A code cell's outputs (streams, text, markdown, html) and, optionally, its source."
    parts = ["".join(cell["source"])] if with_source else []
    for o in cell.get("outputs", []):
        if "text" in o: parts.append("".join(o["text"]))
        for mime in ("text/plain", "text/markdown", "text/html"):
            v = o.get("data", {}).get(mime)
            if v: parts.append("".join(v) if isinstance(v, list) else v)
    return "\n".join(parts)


def numbers(text: str) -> list[float]:
    out = []
    for m in OUTPUT_NUMBER.finditer(text):
        try: out.append(abs(float(m.group(1).replace(",", ""))))
        except ValueError: pass
    return out


def matches(fig: Figure, values: list[float], text: str) -> bool:
    "Does some number read by the cell round to the quoted figure?"
    tol = 0.5 * 10 ** -fig.decimals + 1e-9
    if fig.kind == "frac":
        return fig.text.replace(" ", "") in text.replace(" ", "") or (fig.value in values and fig.den in values)
    close = lambda x: abs(x - fig.value) <= tol
    if fig.kind == "pct":
        return any(close(x) or (x <= 1 and close(100 * x)) for x in values)
    return any(close(x) for x in values)


def named_files(md: str, notebook: Path) -> tuple[str, list[str]]:
    "The text of the committed files a markdown cell names, and the names that are not there."
    texts, missing = [], []
    for m in NAMED_FILE.finditer(md):
        name = m.group(1) or m.group(2)
        hits = [p for p in (REPO / name, notebook.parent / name) if p.is_file()]
        if hits: texts.append(hits[0].read_text(errors="replace")[:5_000_000])
        else: missing.append(name)
    return "\n".join(texts), missing


def stale_figures(notebook: str | Path) -> list[str]:
    "One line per figure in the notebook's prose that the cells it reads do not show."
    notebook = Path(notebook)
    cells = json.loads(notebook.read_text())["cells"]
    problems, above = [], ""
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            above = above + "\n" + _text(cell) if i and cells[i - 1]["cell_type"] == "code" else _text(cell)
            continue
        if cell["cell_type"] != "markdown": continue
        md = "".join(cell["source"])
        below = _text(cells[i + 1]) if i + 1 < len(cells) and cells[i + 1]["cell_type"] == "code" else ""
        files, missing = named_files(md, notebook)
        read = "\n".join((above, below, files))
        values = numbers(read)
        for fig in figures(md):
            if not matches(fig, values, read):
                where = f" (named files not found: {', '.join(missing)})" if missing else ""
                problems.append(f"{notebook.name} cell {i} ({cell.get('id', '?')}): '{fig.text}' is not in the "
                                f"output it reads{where}")
    return problems


def main(paths: list[str]) -> int:
    problems = [p for path in paths for p in stale_figures(path)]
    print("\n".join(problems) or f"every quoted figure matches its output ({len(paths)} notebooks)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or sorted(str(p) for p in (REPO / "nbs").glob("*.ipynb"))))
