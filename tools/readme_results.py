"""README's results, printed by the package from the files the runs left, never typed.

    python tools/readme_results.py          # rewrite README's result blocks from bench/results/
    python tools/readme_results.py --check  # exit 1 if README's blocks differ (tests/test_course.py does this)

Two blocks, between `<!-- results:NAME -->` and `<!-- /results:NAME -->`: `demo` (the demo's held-out table, its
reading and what the index serves, from `bench/results/demo/`, which `make outputs` keeps) and `cisi` (the CISI
test half of `make bench`, from `bench/results/cisi/bench.json`). The index page prints the same sections.
"""
import re
import sys
from pathlib import Path

from archivesrag.report import benchmark_section, metrics_section, served_section

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def blocks(root: Path = ROOT) -> dict[str, str]:
    demo = root / "bench" / "results" / "demo"
    return {"demo": "\n".join(metrics_section(demo)[2:] + served_section(demo)[2:]).strip(),
            "cisi": "\n".join(benchmark_section(root / "bench" / "results" / "cisi" / "bench.json")).strip()}


def with_blocks(text: str, new: dict[str, str]) -> str:
    for name, body in new.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text): raise SystemExit(f"README.md: no <!-- results:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    text = README.read_text()
    new = with_blocks(text, blocks())
    if "--check" in sys.argv:
        sys.exit(0 if new == text else "README.md's results differ from bench/results/: run tools/readme_results.py")
    README.write_text(new)
