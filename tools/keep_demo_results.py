"""Keep the demo's results that the index and README quote: `make outputs` runs it after the notebooks.

    python tools/keep_demo_results.py nbs/runs/demo bench/results/demo

The demo's run folder is not committed (it is rebuilt by every run). Its metrics, the served index's manifest, its
answers and its step state are copied, with this machine's paths written as a reader's machine shows them, into a
folder laid out like a run folder, so that `archivesrag.report`'s sections read it as they read a run. The index's
results cell prints its tables and readings from these files: what the page says is what the demo measured.
"""
import sys
from pathlib import Path

from clean_outputs import _replacements, clean_text

KEEP = ["eval/metrics.json", "index/manifest.json", "answers.jsonl", "state.json"]


def keep(run: Path, dest: Path) -> list[Path]:
    pairs, kept = _replacements(), []
    for name in KEEP:
        src = run / name
        if not src.is_file(): raise SystemExit(f"{src}: missing — run the demo (07_pipeline) first")
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(clean_text(src.read_text(), pairs))
        kept.append(out)
    return kept


if __name__ == "__main__":
    run, dest = (Path(a) for a in (sys.argv[1:3] if len(sys.argv) == 3 else ("nbs/runs/demo", "bench/results/demo")))
    print("\n".join(str(p) for p in keep(run, dest)))
