"""Closed records never leave: unique markers are planted in closed, restricted-until-the-future, internal-audience and
unpublished units of the bundled test archives, and no marker may appear anywhere text leaves the package — search
output, every prompt at the one LLM boundary (`ARCHIVESRAG_PROMPT_LOG`), answers, written query files — while the
restricted and closed ones do appear at the matching clearance, or once their date has passed."""
import json
import shutil

import pytest
from helpers import run_cli

from archivesrag.archives import archives_path
from archivesrag.corpus import read_jsonl

# Planted in the fixtures: closed (no date, or until 2071), restricted until 2090, staff-only notes, unpublished units.
CLOSED, RESTRICTED, INTERNAL, UNPUBLISHED = "ZQX-CLOSED", "ZQX-RESTRICTED", "ZQX-INTERNAL", "ZQX-UNPUBLISHED"
NEVER = (INTERNAL, UNPUBLISHED)          # dropped at load time: for no one, ever
HIDDEN = (CLOSED, RESTRICTED) + NEVER    # hidden from the public today
AS_OF = "2026-01-01"                      # tests pass a fixed date; the CLI's default is today
FIXTURES = ["ead/written/harbour-board-ead3.xml", "csv/st-brigids-school-atom.csv", "oai/northport-oai-dc.xml"]


def planted(text: str, markers=HIDDEN) -> list[str]:
    return [m for m in markers if m in text]


@pytest.fixture(scope="module")
def archive_corpus(tmp_path_factory):
    "The three written fixtures, loaded by `archivesrag corpus` from a folder, as a user would."
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "aids").mkdir()
    for f in FIXTURES: shutil.copy(archives_path(f), tmp / "aids")
    run = run_cli("corpus", "--input_file", tmp / "aids", "--output_file", tmp / "corpus.jsonl")
    assert run.returncode == 0, run.stderr
    return tmp / "corpus.jsonl"


@pytest.mark.fast
def test_internal_and_unpublished_never_reach_the_corpus(archive_corpus):
    text = archive_corpus.read_text()
    assert not planted(text, NEVER)
    assert CLOSED in text and RESTRICTED in text   # kept, with their access: the gate at query time decides
    statuses = {r["access"]["status"] for r in read_jsonl(archive_corpus)}
    assert statuses == {"open", "restricted", "closed"}


@pytest.mark.fast
def test_corpus_line_counts_levels_and_access(archive_corpus, tmp_path):
    run = run_cli("corpus", "--input_file", archives_path("ead/written/harbour-board-ead3.xml"),
                  "--output_file", tmp_path / "c.jsonl")
    assert run.returncode == 0, run.stderr
    for part in ("level:series", "access:closed", "access:restricted", "internal dropped", "unpublished dropped"):
        assert part in run.stdout, run.stdout


def test_gen_query_never_sends_a_closed_record(tmp_path, monkeypatch):
    "The local writer reads only open records by default, and restricted ones when asked; a closed one never."
    corpus = tmp_path / "corpus.jsonl"
    rows = [dict(id="open-1", text="Dredging contracts of the harbour board, 1874 to 1890, with tenders and plans."),
            dict(id="restr-1", text=f"Letters from the donor {RESTRICTED}-9 about the sale of the harbour.",
                 access=dict(status="restricted", until="2090-12-31", rule="Restricted until 2090.")),
            dict(id="closed-1", text=f"Medical reports of harbour pilots {CLOSED}-9 and their pay.",
                 access=dict(status="closed", until=None, rule="Closed: personal data."))]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "prompts.jsonl"
    monkeypatch.setenv("ARCHIVESRAG_PROMPT_LOG", str(log))
    run = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q.jsonl", "--backend", "local",
                  "--max_passage_words", "40")
    assert run.returncode in (0, 1), run.stderr           # 1: the one open passage's query may be filtered
    assert "withheld by access: 1 closed, 1 restricted" in run.stdout, run.stdout
    sent = log.read_text()
    assert "Dredging contracts" in sent and not planted(sent)
    assert not planted((tmp_path / "q.jsonl").read_text() if (tmp_path / "q.jsonl").exists() else "")
    log.unlink()
    run = run_cli("gen-query", "--input_file", corpus, "--output_file", tmp_path / "q2.jsonl", "--backend", "local",
                  "--max_passage_words", "40", "--include_restricted")
    sent = log.read_text()
    assert "withheld by access: 1 closed" in run.stdout, run.stdout
    assert RESTRICTED in sent and CLOSED not in sent
