"""Levers for fine-tuning on CISI, measured on the validation half of its judged queries only.

    python bench/cisi_levers.py --pairs title --kd 1 [--epochs 1] [--name title_kd]

Training pairs come from the documents alone (no LLM, no judgement): `title` (a document's title → its body) and
`ict` (inverse cloze: one sentence → the rest of its abstract); or `recipe`, the package recipe's own mined LLM
queries (`make bench`'s `minedHN.jsonl`), to vary its training schedule. Hard negatives are mined with a teacher —
the base model fused with BM25 — which also scores every (query, passage) pair; `--kd 1` trains on those scores with
FlagEmbedding's own knowledge distillation (KL to the teacher's softmax, plus the usual InfoNCE). Training goes
through the package's `archivesrag.training.train`, scoring through its `Retriever` (as `search` serves, fused by
min-max over the whole collection) and ranx helpers. Each run prints nDCG@10 and Recall@100 on the 38 validation
queries (`bench/cisi_query_split.json`) and appends all figures, test half included, to
`bench/cisi_levers_runs.jsonl` (`bench/bench_cisi.py` prints them as the validation ablation, each lever against the
base model with a paired bootstrap interval). Choose levers on validation only. `--each_epoch 1` saves and scores a
checkpoint after every epoch. `--score_model DIR --name NAME` scores a model trained elsewhere, e.g. by
`bench_cisi.py --out DIR` with other mining flags. Where `make bench` has run, every model is also scored on its
held-out documents' synthetic queries — what a user's archive, which has no judgements, can see (early stopping, the
fusion weight).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from archivesrag.core import read_jsonl, write_jsonl
from archivesrag.evaluation import evaluate_runs, load_glasgow, queries_from_records, query_split, to_run
from archivesrag.models import resolve_embedder
from archivesrag.negatives import parse_range
from archivesrag.pipeline import demo_settings
from archivesrag.retrieval import BM25, Retriever, build_bm25, passage_text, passage_texts
from archivesrag.splits import load_split, select_queries
from archivesrag.training import recipe_defaults, train

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cisi"  # make bench's run: its mined examples, split and synthetic queries
RUNS = REPO / "bench" / "cisi_levers_runs.jsonl"  # every run, committed
WEIGHTS = (1.0, 0.7, 0.5, 0.3, 0.0)
"Dense weights of the min-max fusion scored on CISI's halves: 1.0 is the model alone, 0.0 BM25 alone."

TRAIN_FLAGS = {"lr": "learning_rate", "temperature": "temperature", "passage_max_len": "passage_max_len",
               "batch": "per_device_train_batch_size", "epochs": "num_train_epochs", "group": "train_group_size"}
"The script's training flags and the option of `archivesrag.training.train` each one sets."
LEVER_SCHEDULE = {"per_device_train_batch_size": 32, "num_train_epochs": 1}
"""All the lever runs change in the demo's offline MiniLM recipe (`demo_settings`: batch 16, 2 epochs): CISI has four
times the demo's training queries, so one epoch (1 to 3 score alike on validation) at the original recipe's batch 32,
as `make bench` trains."""


def recipe_schedule() -> dict:
    "The flags' defaults: the recipe's `TrainArgs`, then the demo's offline MiniLM values, then LEVER_SCHEDULE."
    offline = {k: v for k, v in demo_settings().items() if k in TRAIN_FLAGS.values()}
    options = {**recipe_defaults(*TRAIN_FLAGS.values()), **offline, **LEVER_SCHEDULE}
    return {flag: options[option] for flag, option in TRAIN_FLAGS.items()}


SCHEDULE = {**recipe_schedule(), "kd": 0, "each_epoch": 0}
"The recipe's training schedule in the script's flags; a run's label names what it changes."


@dataclass
class Cisi:
    "CISI as every run scores it: passages as `search` serves them (title + text), one BM25 index, the two halves."
    corpus: object
    queries: dict
    qrels: dict
    halves: dict
    doc_ids: list
    texts: list
    bm25: BM25

    def retriever(self, model_path) -> Retriever:
        "The served retrieval of `model_path` over CISI (embeddings cached under make bench's folder)."
        return Retriever.build(self.texts, str(model_path), bm25=self.bm25, cache_dir=OUT / "cache")


def load_cisi(folder: str) -> Cisi:
    "CISI from `folder`, its judged queries halved by the committed split (read through the package's `query_split`)."
    corpus, queries, qrels = load_glasgow(folder)
    texts = passage_texts(corpus)
    halves = query_split(REPO / "bench" / "cisi_query_split.json", qrels)
    return Cisi(corpus, queries, qrels, halves, [str(i) for i in corpus["id"]], texts, build_bm25(texts))


def run_name(args) -> str: return args.name or f"{args.pairs}_kd{args.kd}"


def bench_file(name: str) -> Path:
    "A file of `make bench`'s run, which the recipe levers and the synthetic queries come from."
    path = OUT / name
    if not path.exists(): raise SystemExit(f"{path}: not found; run `make bench` first (its queries, split and mining)")
    return path


def bench_recipe(folder: Path) -> dict:
    """How `make bench` made the examples in `folder` (its `state.json`): the ranks negatives were mined from and the
    number of examples trained on. A `--pairs recipe` run is compared with the recipe run of the same mining."""
    state = folder / "state.json"
    steps = json.loads(state.read_text())["steps"] if state.exists() else {}
    mine_result, train_result = (steps.get(step, {}).get("result", {}) for step in ("mine", "train"))
    found = {"recipe_mining": mine_result.get("range_for_sampling"), "examples": train_result.get("examples")}
    return {k: v for k, v in found.items() if v is not None}


def teacher_scores(cisi: Cisi, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The teacher — the base model fused with BM25 at equal weights, min-max over the whole collection, as served —
    on every passage: `(each query's passage rows best first, the fused score of every [query, passage])`."""
    teacher = cisi.retriever(resolve_embedder("minilm"))
    hits = teacher.select(teacher.rank(queries, depth=len(teacher)), len(teacher), "hybrid", weight=0.5)
    order = np.stack([rows for rows, _ in hits])  # the dense part ranks every passage
    scores = np.zeros(order.shape)
    for n, (rows, fused) in enumerate(hits): scores[n, rows] = fused
    return order, scores


def make_pairs(kind: str, corpus, seed: int) -> list[tuple[str, int, str]]:
    "(query, document row, positive text) pairs from the documents alone."
    rng = random.Random(seed)
    pairs = []
    for row, (title, text) in enumerate(zip(corpus["title"], corpus["text"])):
        if kind in ("title", "both") and title.strip() and text.strip():
            pairs.append((title, row, text))  # body only: the title must not be in its own positive
        if kind in ("ict", "both"):
            sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]
            if len(sentences) >= 3:
                cloze = rng.choice(sentences)
                rest = " ".join(s for s in re.split(r"(?<=[.!?])\s+", text) if s != cloze)
                pairs.append((cloze, row, passage_text({"title": title, "text": rest})))
    return pairs


def scored_record(query: str, positives: list[str], negatives: list[str], scores: list[float], kd_temp: float) -> dict:
    "A training record; for `--kd 1` with the teacher's scores (its one positive's, then each negative's) / `kd_temp`."
    record = {"query": query, "pos": positives, "neg": negatives}
    if scores: record.update(pos_scores=[scores[0] / kd_temp], neg_scores=[s / kd_temp for s in scores[1:]])
    return record


def mine(pairs, cisi: Cisi, args) -> list[dict]:
    "`--negatives` negatives per pair from the teacher's ranks `--range`: bodies for a body, passages for a passage."
    (low, high), bodies = args.range, list(cisi.corpus["text"])
    order, fused = teacher_scores(cisi, [query for query, _, _ in pairs])
    rng, records = random.Random(args.seed), []
    for n, (query, row, positive) in enumerate(pairs):
        candidates = [int(j) for j in order[n, low - 1:high] if j != row]
        if args.drop_above_pos:  # false-negative control: the teacher prefers them to the positive
            candidates = [j for j in candidates if fused[n, j] < fused[n, row]]
        negatives = rng.sample(candidates, min(args.negatives, len(candidates)))
        if not negatives: continue
        texts = bodies if positive == bodies[row] else cisi.texts  # a title's positive is a body, a cloze's a passage
        scores = [float(fused[n, j]) for j in [row, *negatives]] if args.kd else []
        records.append(scored_record(query, [positive], [texts[j] for j in negatives], scores, args.kd_temp))
    return records


def recipe_records(cisi: Cisi, args) -> tuple[list[dict], dict]:
    """`make bench`'s mined LLM queries; for `--kd 1`, the teacher's scores of the positive and each negative, and
    what was dropped: negatives the teacher ranks above the positive (`--drop_above_pos 1`)."""
    mined = read_jsonl(bench_file("minedHN.jsonl"))
    if not args.kd: return [{k: r[k] for k in ("query", "pos", "neg")} for r in mined], {}
    row = {doc_id: n for n, doc_id in enumerate(cisi.doc_ids)}
    _, fused = teacher_scores(cisi, [r["query"] for r in mined])
    records = []
    for n, r in enumerate(mined):
        positive = fused[n, row[r["doc_id"]]]
        kept = [(text, fused[n, row[j]]) for text, j in zip(r["neg"], r["neg_ids"])
                if not args.drop_above_pos or fused[n, row[j]] < positive]
        scores = [float(positive), *(float(s) for _, s in kept)]
        if kept: records.append(scored_record(r["query"], r["pos"], [t for t, _ in kept], scores, args.kd_temp))
    total = sum(len(r["neg"]) for r in mined)
    return records, {"negatives_dropped": total - sum(len(r["neg"]) for r in records), "negatives_mined": total}


def train_model(records: list[dict], work: Path, args) -> Path:
    "Fine-tune the base MiniLM on `records` with the package's `train` (FlagEmbedding; the model served at 256 tokens)."
    data, model = work / "train.jsonl", work / "model"
    write_jsonl(records, data)
    if model.exists(): shutil.rmtree(model)
    options = {option: getattr(args, flag) for flag, option in TRAIN_FLAGS.items()}
    if args.each_epoch: options["save_strategy"] = "epoch"
    started = time.perf_counter()
    train(data, model, model_name_or_path="minilm", seed=args.seed, knowledge_distillation=bool(args.kd), **options)
    print(f"trained {len(records)} examples in {time.perf_counter() - started:.0f} s")
    return model


def checkpoints(model: Path) -> list[tuple[int, Path]]:
    "(epoch, folder) of each per-epoch checkpoint, in order, each given the final model's files to load like it."
    found = sorted(model.glob("checkpoint-*"), key=lambda folder: int(folder.name.split("-")[1]))
    for folder in found:
        for entry in model.iterdir():  # tokenizer, pooling, normalisation, served length; the weights are its own
            if entry.name.startswith("checkpoint-") or entry.name == "README.md" or (folder / entry.name).exists():
                continue
            (shutil.copytree if entry.is_dir() else shutil.copy)(entry, folder / entry.name)
    return list(enumerate(found, 1))


def recipe_reference(runs: list[dict]) -> dict:
    """Per (mining, seed): the per-query figures of the first plain `--pairs recipe` run (make bench's own training)
    recorded. A variant of the schedule is compared with the plain run of its own mining and seed."""
    reference = {}
    for run in runs:
        args = run["args"]
        if args["pairs"] == "recipe" and all(args[k] == v for k, v in SCHEDULE.items()):
            reference.setdefault((run["recipe_mining"], args["seed"]), run["per_query_validation"])
    return reference


def synthetic_held_out(corpus, out: Path = OUT) -> tuple[dict, dict]:
    "The synthetic queries of `make bench`'s held-out documents, each judged by its own document: no human label."
    held_out = load_split(out / "split.json")["test_ids"]
    queries, qrels, _ = queries_from_records(select_queries(read_jsonl(out / "queries.jsonl"), held_out), corpus)
    return queries, qrels


def weight_runs(retriever: Retriever, queries: dict, qids: list[str], doc_ids: list[str], weights=WEIGHTS) -> dict:
    """A ranx run of each query's top 100 per dense weight: the model alone (1.0), BM25 alone (0.0), or their served
    min-max fusion, here over the whole collection (ranked to its full depth)."""
    rankings = retriever.rank([queries[q] for q in qids], depth=len(retriever))
    retrieval = lambda w: "dense" if w == 1 else "bm25" if w == 0 else "hybrid"
    return {f"w={w}": to_run(retriever.select(rankings, 100, retrieval(w), weight=w), doc_ids, qids) for w in weights}


def score_half(retriever: Retriever, queries: dict, qrels: dict, doc_ids: list[str], weights=WEIGHTS) -> tuple:
    "`({w=…: {ndcg@10, recall@100}}, {qid: {w=…: ndcg@10}})` of `qrels`' queries."
    runs = weight_runs(retriever, queries, list(qrels), doc_ids, weights)
    scored = evaluate_runs(qrels, runs, ["ndcg@10", "recall@100"])
    return scored["systems"], scored["per_query"]


def score_run(record: dict, model_path: Path, cisi: Cisi):
    "Both halves of the judged queries (and, where `make bench` has run, its held-out synthetic queries) into `record`."
    retriever = cisi.retriever(model_path)
    for half in ("validation", "test"):
        record[half], per_query = score_half(retriever, cisi.queries, {q: cisi.qrels[q] for q in cisi.halves[half]},
                                             cisi.doc_ids)
        if half == "validation":  # per query, for each lever's interval against the base model
            record["per_query_validation"] = {kind: {q: v[f"w={w}"] for q, v in per_query.items()}
                                              for kind, w in (("dense", 1.0), ("fused", 0.5))}
    if (OUT / "split.json").exists():  # what a user's archive can see: early stopping, the fusion weight
        queries, qrels = synthetic_held_out(cisi.corpus)
        systems, _ = score_half(retriever, queries, qrels, cisi.doc_ids, weights=(1.0, 0.5))
        record["synthetic"] = {"n_queries": len(qrels), **systems}


PAIR_WORDS = {"title": "title → body", "ict": "inverse cloze", "both": "title + inverse cloze",
              "recipe": "LLM queries (recipe)"}
CHANGE_WORDS = {"temperature": "temperature {:g}", "lr": "learning rate {:g}", "group": "group {}",
                "passage_max_len": "training reads {} tok", "batch": "batch {}"}


def lever_name(run: dict) -> str:
    "A lever run in words: its pairs, loss, changes to the schedule, mining, and the tokens it is served at."
    args = run["args"]
    if args["pairs"] == "none": return "none (base MiniLM)"
    words = [PAIR_WORDS[args["pairs"]], "distilled" if args["kd"] else "InfoNCE"]
    words += [form.format(args[flag]) for flag, form in CHANGE_WORDS.items() if args[flag] != SCHEDULE[flag]]
    if args["drop_above_pos"]: words.append("teacher-ranked false negatives dropped")
    if "recipe_mining" in run: words.append(f"negatives from ranks {run['recipe_mining']}")
    if "epoch" in run: words.append(f"epoch {run['epoch']} of {args['epochs']:g}")
    elif args["epochs"] != SCHEDULE["epochs"]: words.append(f"{args['epochs']:g} epochs")
    return ", ".join(words) + f" ({run['served_tokens']} tok)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--cisi", default=str(REPO.parent / "shared" / "datasets" / "cisi"))
    add("--pairs", default="none", choices=["none", "title", "ict", "both", "recipe"],
        help="both: title and inverse-cloze pairs together (two query styles); recipe: make bench's mined LLM queries")
    add("--kd", type=int, default=SCHEDULE["kd"])
    add("--kd_temp", type=float, default=0.05, help="teacher scores in [0,1] are divided by this")
    add("--drop_above_pos", type=int, default=0)
    add("--range", type=parse_range, default="10-100", help="the teacher's ranks negatives are sampled from")
    add("--negatives", type=int, default=7)
    add("--group", type=int, default=SCHEDULE["group"])
    add("--epochs", type=float, default=SCHEDULE["epochs"])
    add("--lr", type=float, default=SCHEDULE["lr"])
    add("--temperature", type=float, default=SCHEDULE["temperature"])
    add("--passage_max_len", type=int, default=SCHEDULE["passage_max_len"],
        help="tokens of each passage read in training (served at the base model's 256)")
    add("--batch", type=int, default=SCHEDULE["batch"], help="queries per step: each is the others' in-batch negative")
    add("--each_epoch", type=int, default=SCHEDULE["each_epoch"],
        help="1: score a checkpoint after every epoch (a training run)")
    add("--seed", type=int, default=42)
    add("--name", default=None)
    add("--score_model", default=None, metavar="DIR",
        help="score a model trained elsewhere (e.g. by `bench_cisi.py --out DIR` with other mining flags), "
             "labelled --name")
    return check_args(parser, parser.parse_args(argv))


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.each_epoch and args.pairs == "none": parser.error("--each_epoch 1 scores the checkpoints of a training run")
    if args.score_model and not (args.name and (Path(args.score_model) / "sentence_bert_config.json").exists()):
        parser.error("--score_model DIR needs a saved model in DIR and a --name for its row")
    if args.score_model and (args.pairs != "none" or args.each_epoch):
        parser.error("--score_model scores a model trained elsewhere: leave out --pairs and --each_epoch")
    return args


def trained_model(args, cisi: Cisi) -> tuple[Path, dict]:
    "The model to score (the base model, one given, or one trained here) and what the run records of its training."
    if args.score_model:
        return Path(args.score_model), {"label": args.name, **bench_recipe(Path(args.score_model).parent)}
    if args.pairs == "none": return Path(resolve_embedder("minilm")), {}
    if args.pairs == "recipe":
        records, info = recipe_records(cisi, args)
        info.update(bench_recipe(OUT))
        if "recipe_mining" not in info: raise SystemExit(f"{OUT / 'state.json'}: no mining range; rerun `make bench`")
    else: records, info = mine(make_pairs(args.pairs, cisi.corpus, args.seed), cisi, args), {}
    info["examples"] = len(records)  # what trained (make bench's own count may differ after --drop_above_pos)
    work = OUT / "levers" / run_name(args)
    work.mkdir(parents=True, exist_ok=True)
    return train_model(records, work, args), info


def new_record(args, info: dict, model: Path, epoch: int | None) -> dict:
    "A run's line of the runs file before scoring: its flags, its training data, the tokens its model is served at."
    served = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"]
    record = {"args": {k: v for k, v in vars(args).items() if k != "cisi"}, **info, "served_tokens": served}
    if args.score_model: record["args"]["score_model"] = os.path.relpath(Path(args.score_model).resolve(), REPO)
    if epoch is not None: record["epoch"] = epoch
    record.setdefault("label", lever_name(record))
    return record


def main(argv=None):
    args = parse_args(argv)
    cisi = load_cisi(args.cisi)
    OUT.mkdir(parents=True, exist_ok=True)
    model, info = trained_model(args, cisi)
    models = checkpoints(model) if args.each_epoch else [(None, model)]
    if not models: raise SystemExit(f"{model}: training saved no per-epoch checkpoint")
    for epoch, folder in models:
        record = new_record(args, info, folder, epoch)
        score_run(record, folder, cisi)
        with open(RUNS, "a") as runs: runs.write(json.dumps(record) + "\n")
        print(json.dumps({"lever": record["label"], "validation": record["validation"],
                          "synthetic": record.get("synthetic")}))


if __name__ == "__main__":
    main()
