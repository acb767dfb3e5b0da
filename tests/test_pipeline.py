"""`archivesrag demo` end to end on a reduced sample archive and its resume; the step runner; the report; the demo's
edges (each a real command that fails before any model loads)."""
import json
from pathlib import Path

import pytest
from helpers import run_cli

from archivesrag.core import InputError
from archivesrag.metrics import paired_bootstrap
from archivesrag.pipeline import RunFolder, demo_config, step_corpus
from archivesrag.report import write_report
from archivesrag.runner import RunState, reset_peak_rss, run_steps

STEPS = ["corpus", "queries", "split", "mine", "train", "evaluate", "index", "answers"]


@pytest.mark.timeout(1500)
def test_reduced_demo_runs_every_step_then_resumes(tmp_path):
    "The demo as a user runs it, in a fresh process (`fresh=True`): every step, training and generation included."
    run = tmp_path / "demo"
    cmd = ["demo", "--run_dir", run, "--max_docs", "12", "--num_train_epochs", "1"]
    first = run_cli(*cmd, fresh=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((run / "state.json").read_text())["steps"]
    assert list(state) == STEPS
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 and "result" in s and s["config"]["max_docs"] == 12
               for s in state.values())

    corpus_ids = {json.loads(l)["id"] for l in (run / "corpus.jsonl").read_text().splitlines()}
    assert len({i.split("#")[0] for i in corpus_ids}) == 12
    split = json.loads((run / "split.json").read_text())
    assert not {i.split("#")[0] for i in split["train_ids"]} & {i.split("#")[0] for i in split["test_ids"]}
    held = set(split["test_ids"]) | set(split.get("val_ids") or [])  # never a mined negative, never in the pool
    negatives = {i for l in (run / "minedHN.jsonl").read_text().splitlines() for i in json.loads(l)["neg_ids"]}
    assert negatives and not negatives & held
    assert state["mine"]["result"]["summary"]["pool_held_out"] == len(held)

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(run / "model"), device="cpu")
    assert abs(float((model.encode(["appraisal"], normalize_embeddings=False) ** 2).sum()) - 1) < 1e-3

    metrics = json.loads((run / "eval" / "metrics.json").read_text())["systems"]
    assert {"BM25", "base", "fine-tuned"} <= set(metrics)
    report = (run / "report.md").read_text()
    assert "| fine-tuned |" in report and "![" in report and "Best on nDCG@10" in report
    served = json.loads((run / "index" / "manifest.json").read_text())["served_from"]  # what evaluation chose, said
    assert served["system"] == state["index"]["result"]["system"] and "## What is served" in report
    for line in report.splitlines():
        if line.startswith("!["):
            assert (run / line.split("](")[1].rstrip(")")).exists()
    answers = [json.loads(l) for l in (run / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(a["answer"].strip() for a in answers)
    assert all(set(a["passages"]) <= corpus_ids for a in answers)
    assert "nDCG@10" in first.stdout  # the terminal summary

    again = run_cli(*cmd, fresh=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done earlier: skipped") == len(STEPS)


# --- the runner -------------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_run_steps_skips_finished_steps_keeps_them_after_a_crash_and_redoes_on_request(tmp_path):
    calls = []
    def count(run, cfg): calls.append("count"); return {"n": cfg["n"]}
    def hold(run, cfg): calls.append("hold"); data = b"x" * (200 * 2**20); return {"bytes": len(data)}
    def crash(run, cfg): calls.append("crash"); raise RuntimeError("the machine went away")
    quiet = lambda *a: None
    first = run_steps(tmp_path, {"count": count, "hold": hold}, {"n": 3}, say=quiet)["steps"]
    assert first["count"]["result"] == {"n": 3} and first["count"]["config"] == {"n": 3}
    if reset_peak_rss():  # Linux: each step's own peak
        assert first["hold"]["peak_rss_mb"] - first["count"]["peak_rss_mb"] > 150
    run_steps(tmp_path, {"count": count, "hold": hold}, {"n": 3}, say=quiet)
    assert calls == ["count", "hold"]
    with pytest.raises(RuntimeError, match="went away"):
        run_steps(tmp_path, {"count": count, "crash": crash}, {"n": 3}, say=quiet)
    assert list(RunState(tmp_path).steps) == ["count", "hold"]
    run_steps(tmp_path, {"count": count}, {"n": 4}, redo={"count"}, say=quiet)
    assert calls[-1] == "count" and RunState(tmp_path).steps["count"]["result"] == {"n": 4}


@pytest.mark.fast
def test_run_steps_refuses_a_rerun_with_other_settings(tmp_path):
    "A finished run rerun with other settings must not report the old results as the new ones."
    step = lambda run, cfg: {"n": cfg["n"]}
    quiet = lambda *a: None
    run_steps(tmp_path, {"count": step}, {"n": 3, "verbose": True}, say=quiet, same_settings=True)
    run_steps(tmp_path, {"count": step}, {"n": 3, "verbose": False}, say=quiet, same_settings=True)  # how it talks: fine
    with pytest.raises(InputError, match=r"step 'count' ran with other settings \(n\); pass --restart"):
        run_steps(tmp_path, {"count": step}, {"n": 4, "verbose": True}, say=quiet, same_settings=True)


@pytest.mark.timeout(120)
def test_run_steps_in_a_fresh_process_runs_a_real_step(tmp_path):
    run = RunFolder(tmp_path)
    out = run_steps(run, {"corpus": step_corpus}, demo_config(max_docs=3, verbose=False), fresh_process=True,
                    say=lambda *a: None)["steps"]["corpus"]
    assert out["result"]["documents"] == 3 and out["peak_rss_mb"] > 0
    assert len(run.corpus.read_text().splitlines()) == out["result"]["passages"]


# --- the report -------------------------------------------------------------------------------------------------

def _finished_run(folder: Path, n: int = 31) -> Path:
    "A run folder as evaluation leaves it: state.json and eval/metrics.json with per-query scores, no plots."
    import numpy as np
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.9, n)
    pq = {f"q{i}": {"BM25": float(b + 0.1), "base": float(b), "fine-tuned": float(min(1, b + 0.15)),
                    "base+BM25": float(b + 0.05), "fine-tuned+BM25": float(b + 0.05)} for i, b in enumerate(base)}
    systems = {s: {"ndcg@10": float(np.mean([v[s] for v in pq.values()])), "recall@10": 0.9} for s in pq["q0"]}
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "metrics.json").write_text(json.dumps({"systems": systems, "per_query": pq, "n_queries": n,
                                                              "split": {"seed": 42}}))
    RunState(folder).record("corpus", seconds=1.0, peak_rss_mb=600, result={"passages": 17})
    return folder


@pytest.mark.fast
def test_report_reads_its_table_and_writes_no_empty_heading(tmp_path):
    report = write_report(_finished_run(tmp_path / "run")).read_text()
    assert "## Plots" not in report and "## Answers" not in report  # nothing under them: no heading
    assert "| fine-tuned | " in report and "## Steps" in report
    assert "Best on nDCG@10: fine-tuned" in report
    assert "fine-tuned − base, nDCG@10: +0.1" in report and "95% paired bootstrap interval" in report
    assert "With n = 31" in report


@pytest.mark.fast
def test_report_says_what_the_index_serves_and_why(tmp_path):
    run = _finished_run(tmp_path / "run")
    (run / "index").mkdir()
    reading = "fine-tuned + BM25 (RRF), chosen on 30 validation queries (corpus): nDCG@10 0.850"
    (run / "index" / "manifest.json").write_text(json.dumps({"model": "/m/model", "fusion": "rrf", "fusion_weight": 0.5,
                                                             "served_from": {"system": "fine-tuned+BM25 RRF", "reading": reading}}))
    report = write_report(run).read_text()
    assert "## What is served" in report and reading in report


@pytest.mark.fast
def test_paired_bootstrap_interval_shows_a_real_gain_and_not_a_tie():
    pq = {f"q{i}": {"a": 0.5 + (0.2 if i % 2 else 0.1), "b": 0.5, "c": 0.5 + (0.05 if i % 2 else -0.05)} for i in range(31)}
    gain, tie = paired_bootstrap(pq, "a", "b"), paired_bootstrap(pq, "c", "b")
    assert gain["n_queries"] == 31 and 0 < gain["low"] < gain["diff"] < gain["high"]
    assert tie["low"] < 0 < tie["high"]
    with pytest.raises(InputError, match="at least 2 queries"): paired_bootstrap({"q": {"a": 1, "b": 0}}, "a", "b")


# --- edges: one line naming the problem, exit 2, nothing loaded -------------------------------------------------

def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archivesrag demo: error:"), r.stderr
    assert "Traceback" not in r.stderr and all(w in lines[0] for w in words), lines[0]


@pytest.mark.fast
def test_demo_with_a_damaged_state_file_says_which_and_how_to_fix(tmp_path):
    run = tmp_path / "run"; run.mkdir()
    (run / "state.json").write_text('{"steps": {"corpus": {"seconds": 4.7, "peak')  # truncated
    _one_line_error(run_cli("demo", "--run_dir", run), str(run / "state.json"), "damaged", "--restart", "delete it")
    (run / "state.json").write_text("[1, 2]")  # valid JSON, not a state
    _one_line_error(run_cli("demo", "--run_dir", run), "run state file", "--restart")
    assert sorted(p.name for p in run.iterdir()) == ["plots", "state.json"]  # nothing else ran


@pytest.mark.fast
def test_demo_with_a_file_as_run_dir(tmp_path):
    f = tmp_path / "notes.txt"; f.write_text("mine")
    _one_line_error(run_cli("demo", "--run_dir", f), str(f), "is a file, not a folder")
    _one_line_error(run_cli("demo", "--run_dir", f / "sub"), "is a file, not a folder")
    _one_line_error(run_cli("demo", "--run_dir", f, "--restart"), "is a file")
    assert f.read_text() == "mine"


@pytest.mark.fast
def test_demo_restart_deletes_only_a_run_folder(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    _one_line_error(run_cli("demo", "--run_dir", tmp_path, "--restart"), "not a run folder", "leaves it alone")
    assert (tmp_path / "thesis.tex").exists()


@pytest.mark.fast
@pytest.mark.parametrize("flags, words", [(["--max_docs", "1"], ["--max_docs", "at least 2"]),
                                          (["--max_docs", "0"], ["--max_docs"]),
                                          (["--num_train_epochs", "0"], ["--num_train_epochs"]),
                                          (["--test_size", "1.5"], ["--test_size"]),
                                          (["--full"], ["--full", "leave out --full"])])  # offline here: never a full run
def test_demo_bad_flags_fail_before_any_work(tmp_path, flags, words):
    _one_line_error(run_cli("demo", "--run_dir", tmp_path / "run", *flags), *words)
    assert not (tmp_path / "run").exists()
