"""Red-team rows of round 3 for mine-hn, train, evaluate and demo: each runs the real command, as a user would.

Bad input: one line naming the file or flag, exit 2, nothing written; training runs are one or two tiny steps.
"""
import json
import subprocess
import sys
import time

import pytest

from helpers import CLI_CODE, run_cli

PASSAGES = ["Building permit files are kept for ten years after the permit closes.",
            "Payroll registers are retained for seven years, then destroyed.",
            "Council minutes are permanent records and transfer to the archives.",
            "A fixity check compares checksums to detect damaged files.",
            "Maps and plans of public works are kept permanently.",
            "Email of senior officials is appraised for permanent retention."]
QUERIES = ["how long are building permits kept", "payroll retention period", "are council minutes permanent"]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path):
    "A six-passage corpus, its queries, and a tiny mined training file (8 examples), as real files."
    corpus = _jsonl(tmp_path / "corpus.jsonl", [{"id": f"p{i}", "doc_id": f"d{i}", "text": t} for i, t in enumerate(PASSAGES)])
    queries = _jsonl(tmp_path / "queries.jsonl",
                     [{"id": f"p{i}", "query": q, "positive": [PASSAGES[i]]} for i, q in enumerate(QUERIES)])
    mined = _jsonl(tmp_path / "minedHN.jsonl", [{"query": f"{QUERIES[i % 3]} ({i})", "pos": [PASSAGES[i % 6]],
                                                 "neg": [PASSAGES[(i + 1) % 6], PASSAGES[(i + 2) % 6]]} for i in range(8)])
    return {"dir": tmp_path, "corpus": corpus, "queries": queries, "mined": mined}


def one_line_error(r, command, *words, alone=True):
    "Exit 2 and one stderr line `archivesrag COMMAND: error: ...` holding every word (the last, after a training's"
    " progress bars and logs when `alone` is False); no traceback."
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in r.stderr and (len(lines) == 1 or not alone), r.stderr[-3000:]
    assert [l for l in lines if l.startswith("archivesrag ")] == lines[-1:], r.stderr[-3000:]
    assert lines[-1].startswith(f"archivesrag {command}: error:") and all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


TINY = ["--per_device_train_batch_size", "4", "--query_max_len", "16", "--passage_max_len", "32", "--logging_steps", "1"]


# --- mine-hn ---------------------------------------------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize("row, out_is", [("M15", "queries"), ("M18", "corpus")])
def test_mine_hn_never_writes_over_an_input(files, row, out_is):
    before = {k: files[k].read_bytes() for k in ("queries", "corpus")}
    r = run_cli("mine-hn", "--input_file", files["queries"], "--candidate_pool", files["corpus"],
                "--output_file", files[out_is])
    one_line_error(r, "mine-hn", str(files[out_is]), "--output_file",
                   "--input_file" if out_is == "queries" else "--candidate_pool")
    assert {k: files[k].read_bytes() for k in before} == before


@pytest.mark.fast
def test_mine_hn_refuses_an_input_through_a_symlink(files):
    link = files["dir"] / "link.jsonl"
    link.symlink_to(files["queries"])
    before = files["queries"].read_bytes()
    one_line_error(run_cli("mine-hn", "--input_file", files["queries"], "--output_file", link), "mine-hn", "--input_file")
    assert files["queries"].read_bytes() == before and link.is_symlink()


@pytest.mark.fast
@pytest.mark.parametrize("batch", ["0", "-4"])  # M19, M20
def test_mine_hn_batch_size_below_one(files, batch):
    out = files["dir"] / "hn" / "mined.jsonl"
    r = run_cli("mine-hn", "--input_file", files["queries"], "--output_file", out, "--candidate_pool", files["corpus"],
                "--batch_size", batch)
    one_line_error(r, "mine-hn", "--batch_size", batch)
    assert not out.exists()


@pytest.mark.fast
def test_mine_hn_drops_and_counts_duplicate_queries(files):
    "M21: a query repeated with the same positive is one example; the summary counts the rest."
    dup = _jsonl(files["dir"] / "q_dup.jsonl",
                 [*map(json.loads, files["queries"].read_text().splitlines()),
                  {"id": "p0", "query": "How long are  BUILDING permits kept", "positive": [PASSAGES[0]]},  # same, respelt
                  {"id": "p1", "query": QUERIES[1], "positive": [PASSAGES[1]]}])
    out = files["dir"] / "mined.jsonl"
    r = run_cli("mine-hn", "--input_file", dup, "--output_file", out, "--candidate_pool", files["corpus"],
                "--range_for_sampling", "2-6", "--negative_number", "2", "--relative_margin", "0",
                "--cache_dir", files["dir"] / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    mined = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(m["query"] for m in mined) == sorted(QUERIES)
    assert "mined 3/3 examples" in r.stdout and "2 skipped duplicate query" in r.stdout, r.stdout


@pytest.mark.fast
@pytest.mark.parametrize("bad_id", [["weird"], {"a": 1}, True])  # M22
def test_mine_hn_refuses_an_id_that_is_not_text_or_a_number(files, bad_id):
    q = _jsonl(files["dir"] / "q_id.jsonl", [{"id": "p0", "query": QUERIES[0], "positive": [PASSAGES[0]]},
                                             {"id": bad_id, "query": QUERIES[1], "positive": [PASSAGES[1]]}])
    r = run_cli("mine-hn", "--input_file", q, "--output_file", files["dir"] / "m.jsonl", "--candidate_pool", files["corpus"])
    one_line_error(r, "mine-hn", f"{q}:2:", "an id must be a string or a number")
    assert not (files["dir"] / "m.jsonl").exists()


@pytest.mark.fast
@pytest.mark.parametrize("flags, words", [(["--range_for_sampling", "200-2"], ["--range_for_sampling", "200-2"]),
                                          (["--negative_number", "0"], ["--negative_number"]),
                                          (["--output_file", "{dir}"], ["is a folder"])])
def test_mine_hn_own_probes(files, flags, words):
    "Our probes: a reversed range, no negatives, a folder as the output: refused before any model loads."
    flags = [f.format(dir=files["dir"]) for f in flags]
    args = ["--input_file", files["queries"], "--candidate_pool", files["corpus"]]
    if "--output_file" not in flags: args += ["--output_file", files["dir"] / "m.jsonl"]
    r = run_cli("mine-hn", *args, *flags)
    one_line_error(r, "mine-hn", *words)
    assert "encoding" not in r.stdout


# --- train: arguments checked before anything starts ------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize("row, flags, flag", [
    ("T05", ["--num_train_epochs", "0"], "--num_train_epochs"),
    ("T06", ["--num_train_epochs", "-1"], "--num_train_epochs"),
    ("T07", ["--learning_rate", "nan", "--max_steps", "2"], "--learning_rate"),
    ("T08", ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
    ("T09", ["--train_group_size", "0"], "--train_group_size"),
    ("T11", ["--num_train_epochs", "nan"], "--num_train_epochs"),
    ("T12", ["--temperature", "0", "--max_steps", "1"], "--temperature"),
    ("T12b", ["--temperature", "-0.05"], "--temperature"),
    ("T13", ["--deepspeed", "nosuch_ds.json"], "--deepspeed nosuch_ds.json: no such file"),
    ("T17", ["--nproc_per_node", "-1", "--dry_run"], "--nproc_per_node"),
    ("own", ["--learning_rate", "inf"], "--learning_rate"),
    ("own", ["--logging_steps", "0"], "--logging_steps"),
    ("own", ["--passage_max_len", "-5"], "--passage_max_len"),
])
def test_train_refuses_a_bad_flag_before_it_starts(files, row, flags, flag):
    out = files["dir"] / "model"
    r = run_cli("train", "--output_dir", out, "--train_data", files["mined"], *TINY, *flags)
    line = one_line_error(r, "train", flag)
    assert "examples" not in line and "batch" not in line.replace(flag, "")  # T05: the data is not blamed
    assert not out.exists() and "training data" not in r.stdout  # refused before the data was even read


@pytest.mark.fast
@pytest.mark.parametrize("flags, flag", [(["--max_steps", "-3"], "--max_steps"), (["--warmup_ratio", "nan"], "--warmup_ratio"),
                                         (["--seed", "-1"], "--seed"), (["--gradient_accumulation_steps", "0"],
                                                                         "--gradient_accumulation_steps")])
def test_train_refuses_a_bad_pass_through_flag_before_the_model_loads(files, flags, flag):
    "Our probes: TrainingArguments flags transformers takes (or crashes on) are refused before any training."
    out = files["dir"] / "model"
    r = run_cli("train", "--output_dir", out, "--train_data", files["mined"], *TINY, *flags)
    one_line_error(r, "train", flag)
    assert not out.exists()


@pytest.mark.fast
def test_train_output_dir_that_is_a_file(files):
    one_line_error(run_cli("train", "--output_dir", files["mined"], "--train_data", files["mined"], *TINY),
                   "train", "is a file, not a folder")
    assert files["mined"].read_text().count("\n") == 8


@pytest.mark.fast
def test_train_refuses_a_folder_another_training_holds(files):
    "TC: the lock is held for the whole run; a second training into the folder is refused at once."
    from archivesrag.core import output_lock
    out = files["dir"] / "model"
    with output_lock(out):
        r = run_cli("train", "--output_dir", out, "--train_data", files["mined"], *TINY, "--max_steps", "1")
    one_line_error(r, "train", str(out), "another training is writing this folder", "--output_dir")
    assert not out.exists()


@pytest.mark.timeout(180)
def test_two_trainings_into_one_folder_at_once(files):
    "TC as the red team ran it: two real trainings started together (the first a process of its own, a raw `Popen`"
    " that runs while the second starts); one finishes, the other is refused."
    out = files["dir"] / "cc"
    args = ["train", "--output_dir", str(out), "--train_data", str(files["mined"]), *TINY, "--max_steps", "2"]
    first = subprocess.Popen([sys.executable, "-c", CLI_CODE, *args, "--seed", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (files["dir"] / "cc.lock").exists() and first.poll() is None and time.time() < deadline: time.sleep(0.2)
    second = run_cli(*args, "--seed", "2")  # here, while the first process trains
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    line = one_line_error(second, "train", str(out))
    assert "another training is writing this folder" in line or "not empty" in line
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "README.md").exists() and not (files["dir"] / "cc.lock").exists()


@pytest.mark.timeout(120)
def test_train_that_diverges_saves_no_model(files):
    "T12: weights that became NaN or infinite are refused after training; the folder does not look finished."
    out = files["dir"] / "model"
    r = run_cli("train", "--output_dir", out, "--train_data", files["mined"], *TINY, "--max_steps", "1",
                "--learning_rate", "1e39")
    one_line_error(r, "train", "training diverged", "NaN or infinity", "no model was saved", "--learning_rate", alone=False)
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not {"config.json", "model.safetensors", "README.md", "modules.json"} & set(left), left
    assert not [n for n in left if n.startswith("checkpoint-")], left  # resuming one would resume the divergence
    # the folder is reusable: a sane run into it trains and saves
    ok = run_cli("train", "--output_dir", out, "--train_data", files["mined"], *TINY, "--max_steps", "1")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


# --- evaluate and demo -------------------------------------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize("flags, words", [(["--k", "0"], ["--k", "at least 1"]), (["--k", "-2"], ["--k"]),  # E01
                                          (["--fusion_weight", "2"], ["--fusion_weight"])])
def test_evaluate_refuses_bad_numbers_before_any_model_loads(files, flags, words):
    r = run_cli("evaluate", "--queries_file", files["queries"], "--corpus_file", files["corpus"], "--no_plots",
                "--output_dir", files["dir"] / "ev", *flags)
    one_line_error(r, "evaluate", *words)
    assert "encoding" not in r.stdout + r.stderr and not (files["dir"] / "ev").exists()


@pytest.mark.fast
def test_evaluate_with_an_empty_queries_file(files):
    empty = files["dir"] / "empty.jsonl"; empty.write_text("")
    one_line_error(run_cli("evaluate", "--queries_file", empty, "--corpus_file", files["corpus"], "--no_plots",
                           "--output_dir", files["dir"] / "ev"), "evaluate", str(empty), "empty")


@pytest.mark.fast
@pytest.mark.parametrize("epochs", ["nan", "inf", "-1"])  # D05
def test_demo_checks_training_settings_before_the_first_step(tmp_path, epochs):
    run = tmp_path / "run"
    one_line_error(run_cli("demo", "--run_dir", run, "--num_train_epochs", epochs), "demo", "--num_train_epochs")
    assert not run.exists()  # no step ran: not even the corpus
