"""`archivesrag demo` end to end on a reduced sample archive, and its resume."""
import json
import subprocess
import sys
from pathlib import Path

ARCHIVESRAG = str(Path(sys.executable).parent / "archivesrag")
STEPS = ["corpus", "queries", "split", "mine", "train", "evaluate", "index", "answers"]


def test_reduced_demo_runs_every_step_then_resumes(tmp_path):
    run = tmp_path / "demo"
    cmd = [ARCHIVESRAG, "demo", "--run_dir", str(run), "--max_docs", "12", "--num_train_epochs", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((run / "state.json").read_text())["steps"]
    assert list(state) == STEPS

    corpus_ids = {json.loads(l)["id"] for l in (run / "corpus.jsonl").read_text().splitlines()}
    assert len({i.split("#")[0] for i in corpus_ids}) == 12
    split = json.loads((run / "split.json").read_text())
    assert not {i.split("#")[0] for i in split["train_ids"]} & {i.split("#")[0] for i in split["test_ids"]}

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(run / "model"), device="cpu")
    assert abs(float((model.encode(["appraisal"], normalize_embeddings=False) ** 2).sum()) - 1) < 1e-3

    metrics = json.loads((run / "eval" / "metrics.json").read_text())["systems"]
    assert {"BM25", "base", "fine-tuned"} <= set(metrics)
    report = (run / "report.md").read_text()
    assert "| fine-tuned |" in report and "![" in report
    for line in report.splitlines():
        if line.startswith("!["):
            assert (run / line.split("](")[1].rstrip(")")).exists()
    answers = [json.loads(l) for l in (run / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(a["answer"].strip() for a in answers)
    assert all(set(a["passages"]) <= corpus_ids for a in answers)
    assert "nDCG@10" in first.stdout  # the terminal summary

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done earlier: skipped") == len(STEPS)
