"""The docs site: every notebook processes for Quarto and opens with a title, a description and a Colab badge."""
import json
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))
NO_MODULE = {"08_robustness.ipynb"}  # the appendix shows the modules' guards and grows no module of its own


@pytest.mark.timeout(300)
def test_proc_nbs_processes_every_notebook(monkeypatch):
    from nbdev.serve import proc_nbs
    monkeypatch.chdir(NBS.parent)
    cache = proc_nbs()
    processed = {p.name for p in Path(cache).glob("*.ipynb")}
    assert {nb.name for nb in NOTEBOOKS} <= processed


@pytest.mark.fast
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_title_description_and_badge(nb):
    cells = json.loads(nb.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert first.startswith("# ") and "\n> " in first, f"{nb.name}: first cell needs '# Title' and '> description'"
    if nb.name != "index.ipynb":
        assert "colab.research.google.com/github" in "".join(cells[1]["source"]), f"{nb.name}: no Colab badge"
        hidden = "".join(cells[2]["source"])
        assert hidden.startswith("#| hide") and "google.colab" in hidden, f"{nb.name}: no hidden Colab install cell"
        if nb.name not in NO_MODULE:
            assert "".join(cells[3]["source"]).startswith("#| default_exp"), f"{nb.name}: default_exp must follow"


@pytest.mark.fast
def test_spine_is_complete():
    names = {nb.stem for nb in NOTEBOOKS}
    for stem in ["index", "00_corpus", "01_queries", "02_negatives", "03_training", "04_evaluation", "05_search",
                 "06_rag", "07_pipeline"]:
        assert stem in names, f"missing notebook {stem}.ipynb"


@pytest.mark.fast
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_outputs_hold_no_machine_paths_or_progress_bars(nb):
    "What the docs site shows: `make outputs` cleans them (tools/clean_outputs.py); a stray one fails here."
    import re
    for cell in json.loads(nb.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + json.dumps(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"/(work|root|home)/|\.venv/|site-packages/", text), f"{nb.name} {cell.get('id')}: a machine path"
            assert not re.search(r"\d+%\||it/s\]", text), f"{nb.name} {cell.get('id')}: a progress bar"
