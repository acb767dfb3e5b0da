"""Words of prose in the course: what a reader reads, code aside.

    python tools/course_words.py          # per notebook, the core path's total, and the appendix

Prose is the text of markdown cells without fenced code, plus readings that cells print as Markdown (a reading
printed from its values is still prose to read). The core path is every notebook but the appendix
(`08_robustness`); the index states its length and `tests/test_course.py` checks it against this count.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

NBS = Path(__file__).resolve().parents[1] / "nbs"
APPENDIX = {"08_robustness.ipynb"}
CORE_LIMIT = 26_000  # issue 26: about four hours at a learner's pace with the code


def prose_words(notebook: str | Path) -> int:
    "Words of prose in one notebook: markdown cells without fenced code, and Markdown outputs."
    n = 0
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            n += len(re.sub(r"```.*?```", " ", "".join(cell["source"]), flags=re.S).split())
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md: n += len(("".join(md) if isinstance(md, list) else md).split())
    return n


def course_words(nbs: Path = NBS) -> dict[str, int]:
    "`{notebook name: prose words}` for every notebook, in reading order."
    return {p.name: prose_words(p) for p in sorted(nbs.glob("*.ipynb"))}


def core_words(nbs: Path = NBS) -> int:
    return sum(n for name, n in course_words(nbs).items() if name not in APPENDIX)


if __name__ == "__main__":
    words = course_words()
    for name, n in words.items(): print(f"{name:28} {n:6,}{'  (appendix)' if name in APPENDIX else ''}")
    print(f"{'core path':28} {core_words():6,}  (limit {CORE_LIMIT:,})")
    sys.exit(0)
