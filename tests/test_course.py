"""The course as a reader meets it: every figure quoted in prose matches the output it reads, and the core path is
as long as the index says, within the limit (tools/figure_check.py, tools/course_words.py)."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from course_words import CORE_LIMIT, core_words  # noqa: E402
from figure_check import figures, matches, numbers, stale_figures  # noqa: E402

NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.fast
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_quoted_figure_matches_its_output(nb):
    stale = stale_figures(nb)
    assert not stale, "figures in prose that their cells do not show (print them from the values, or fix them):\n" + "\n".join(stale)


@pytest.mark.fast
def test_figure_check_reads_figures_not_versions_or_code():
    found = [f.text for f in figures("nDCG@10 rose from 0.659 to 0.737 (+12%) in 84.5 s, 26/31 ties; "
                                     "Python 3.10, bge-base-en-v1.5, `--temperature 0.02`, $e^{0.5}$, 1/rank")]
    assert found == ["0.659", "0.737", "12%", "84.5 s", "26/31"]


@pytest.mark.fast
def test_figure_check_matches_rounded_figures_only():
    out = "ndcg@10 0.8297  share 0.45  took 16.2 min"
    fig = {f.text: f for f in figures("0.830, 0.83, 45%, 16 min, 0.848, 0.2 ms")}
    assert [t for t, f in fig.items() if matches(f, numbers(out), out)] == ["0.830", "0.83", "45%", "16 min"]


@pytest.mark.fast
def test_figure_check_reads_the_cells_above_not_any_output(tmp_path):
    def nb(*cells):
        p = tmp_path / "t.ipynb"
        p.write_text(json.dumps({"cells": list(cells)}))
        return p
    code = lambda out: {"cell_type": "code", "source": ["x"], "outputs": [{"output_type": "stream", "text": [out]}]}
    md = lambda s: {"cell_type": "markdown", "source": [s]}
    assert stale_figures(nb(code("0.812"), md("It scores 0.81."), md("Still 0.81."))) == []
    stale = stale_figures(nb(code("0.812"), md("It scores 0.81."), code("0.5"), md("Again 0.81.")))
    assert len(stale) == 1 and "'0.81'" in stale[0] and "cell 3" in stale[0]


@pytest.mark.fast
def test_core_path_fits_and_the_index_says_how_long():
    words = core_words()
    assert words <= CORE_LIMIT, f"the core path is {words:,} words of prose, over {CORE_LIMIT:,}"
    index = "".join("".join(c["source"]) for c in json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"])
    stated = re.search(r"about ([\d,]+) words of prose", index)
    assert stated, "index.ipynb must say how long the core path is ('about N words of prose')"
    said = int(stated.group(1).replace(",", ""))
    assert abs(said - words) <= 500, f"index.ipynb says about {said:,} words; the core path has {words:,}"


@pytest.mark.fast
def test_readme_results_are_what_the_runs_left():
    "README's result blocks are printed by the package from bench/results/ (tools/readme_results.py), never typed."
    from readme_results import README, blocks, with_blocks
    text = README.read_text()
    assert with_blocks(text, blocks()) == text, "README.md's results differ from bench/results/: run tools/readme_results.py"
