"""Levers for fine-tuning on CISI, measured on the validation half of its judged queries only.

    python bench/cisi_levers.py --pairs title --kd 1 [--epochs 1] [--name title_kd]

Training pairs come from the documents alone (no LLM, no judgement): `title` (a document's title → its body) and
`ict` (inverse cloze: one sentence → the rest of its abstract); or `recipe`, the package recipe's own mined LLM
queries (`make bench`'s `minedHN.jsonl`), to vary its training schedule. Hard negatives are mined with the base model;
a teacher — the base model fused with BM25 — scores every (query, passage) pair, and `--kd 1` trains on those
scores with FlagEmbedding's own knowledge distillation (KL to the teacher's softmax, plus the usual InfoNCE).
Each run prints nDCG@10 and Recall@100 on the 38 validation queries (`bench/cisi_query_split.json`) and appends
all figures, test half included, to `bench/cisi_levers_runs.jsonl` (`bench/bench_cisi.py` prints them as the
validation ablation, each lever against the base model with a paired bootstrap interval). Choose levers on
validation only. `--reeval NAME` scores an earlier run's model again at the length it is now served at.
`--each_epoch 1` saves and scores a checkpoint after every epoch. `--score_model DIR --name NAME` scores a model
trained elsewhere, e.g. by `bench_cisi.py --out DIR` with other mining flags. Where `make bench` has run, every model is also
scored on its held-out documents' synthetic queries — what a user's archive, which has no judgements, can see
(early stopping, the fusion weight).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

os.environ.setdefault("ARCHIVESRAG_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from archivesrag.retrieval import passage_text, passage_texts

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cisi"
RUNS = REPO / "bench" / "cisi_levers_runs.jsonl"  # every run, committed
SCHEDULE = dict(kd=0, group=2, batch=32, lr=3e-5, temperature=0.05, epochs=1, each_epoch=0, passage_max_len=128)
"The recipe's training schedule: the flags' defaults; a run's label names what it changes."


def run_name(args: dict) -> str: return args.get("name") or f"{args['pairs']}_kd{args['kd']}"


def load(cisi: str):
    from archivesrag.evaluation import load_glasgow, query_split
    corpus, queries, qrels = load_glasgow(cisi)
    return corpus, queries, qrels, query_split(REPO / "bench" / "cisi_query_split.json", qrels)


def bench_file(name: str) -> Path:
    "A file of `make bench`'s run, which the recipe levers and the synthetic queries come from."
    f = OUT / name
    if not f.exists(): raise SystemExit(f"{f}: not found; run `make bench` first (its queries, split and mining)")
    return f


def bench_recipe(folder: Path) -> dict:
    """How `make bench` made the examples in `folder` (its `state.json`): the ranks negatives were mined from and the
    examples trained on. `--pairs recipe` trains on them, and a run is compared with the recipe run that used the
    same mining (runs recorded before this was kept used 10-100)."""
    state = folder / "state.json"
    steps = json.loads(state.read_text())["steps"] if state.exists() else {}
    mine, train = steps.get("mine", {}).get("result", {}), steps.get("train", {}).get("result", {})
    return {k: v for k, v in {"recipe_mining": mine.get("range_for_sampling"),
                              "examples": train.get("examples")}.items() if v is not None}


def encode(model_path: str, texts: list[str]) -> np.ndarray:
    "The package's cached encoder: each model loaded once, each text set encoded once (a changed model re-encodes)."
    from archivesrag.retrieval import encode_cached
    return encode_cached(model_path, texts, cache_dir=OUT / "cache")


def minmax(x: np.ndarray) -> np.ndarray:
    "The served min-max (`archivesrag.retrieval.minmax`) over every document of each row."
    from archivesrag.retrieval import minmax as served_minmax
    return served_minmax(x, np.ones(x.shape, dtype=bool))


class Teacher:
    "Base MiniLM fused with BM25 (min-max per query over the whole corpus, equal weights): scores any (query, doc)."
    def __init__(self, base_path: str, docs: list[str], base_emb: np.ndarray, bm25):
        self.model_path, self.emb, self.bm25 = base_path, base_emb, bm25
        self.n = len(docs)

    def scores(self, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
        "(dense cosine [nq, n], fused teacher score in [0, 1] [nq, n])."
        dense = encode(self.model_path, queries) @ self.emb.T
        return dense, 0.5 * minmax(dense) + 0.5 * minmax(bm25_matrix(self.bm25, queries, self.n))


def make_pairs(kind: str, corpus, seed: int) -> list[tuple[str, int, str]]:
    "(query, document row, positive text) pairs from the documents alone."
    rng = random.Random(seed)
    pairs = []
    for i, (title, text) in enumerate(zip(corpus["title"], corpus["text"])):
        if kind in ("title", "both") and title.strip() and text.strip():
            pairs.append((title, i, text))  # body only: the title must not be in its own positive
        if kind in ("ict", "both"):
            sents = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]
            if len(sents) >= 3:
                s = rng.choice(sents)
                rest = " ".join(x for x in re.split(r"(?<=[.!?])\s+", text) if x != s)
                pairs.append((s, i, passage_text({'title': title, 'text': rest})))
    return pairs


def mine(pairs, teacher: Teacher, docs: list[str], bodies: list[str], kind_of, a) -> list[dict]:
    "Negatives from the teacher's ranks a.lo..a.hi; teacher scores for pos and negs, scaled by 1/a.kd_temp."
    lo, hi = a.range
    dense, fused = teacher.scores([q for q, _, _ in pairs])
    rng = random.Random(a.seed)
    recs = []
    for n, (q, row, pos) in enumerate(pairs):
        order = np.argsort(-fused[n])
        cands = [int(j) for j in order[lo - 1:hi] if int(j) != row]
        if a.drop_above_pos:  # false-negative control: the teacher prefers them to the positive
            cands = [j for j in cands if fused[n, j] < fused[n, row]]
        negs = rng.sample(cands, min(a.negatives, len(cands)))
        if not negs: continue
        neg_texts = [bodies[j] if kind_of(pos) == "body" else docs[j] for j in negs]
        recs.append({"query": q, "pos": [pos], "neg": neg_texts,
                     "pos_scores": [float(fused[n, row]) / a.kd_temp],
                     "neg_scores": [float(fused[n, j]) / a.kd_temp for j in negs]})
    return recs


def recipe_records(teacher: Teacher, doc_ids: list[str], a) -> tuple[list[dict], dict]:
    """`make bench`'s mined LLM queries; for `--kd 1`, the teacher's scores of the positive and each negative.
    Also what was dropped: negatives the teacher ranks above the positive (`--drop_above_pos 1`)."""
    from archivesrag.corpus import read_jsonl
    recs = [{"query": r["query"], "pos": r["pos"], "neg": r["neg"], "row": r["doc_id"], "neg_rows": r["neg_ids"]}
            for r in read_jsonl(bench_file("minedHN.jsonl"))]
    if not a.kd: return [{k: r[k] for k in ("query", "pos", "neg")} for r in recs], {}
    row = {d: i for i, d in enumerate(doc_ids)}
    _, fused = teacher.scores([r["query"] for r in recs])
    out, mined = [], sum(len(r["neg"]) for r in recs)
    for n, r in enumerate(recs):
        pos = fused[n, row[r["row"]]]
        negs = [(t, fused[n, row[j]]) for t, j in zip(r["neg"], r["neg_rows"]) if not a.drop_above_pos or fused[n, row[j]] < pos]
        if negs: out.append({"query": r["query"], "pos": r["pos"], "neg": [t for t, _ in negs],
                             "pos_scores": [float(pos) / a.kd_temp], "neg_scores": [float(s) / a.kd_temp for _, s in negs]})
    return out, {"negatives_dropped": mined - sum(len(r["neg"]) for r in out), "negatives_mined": mined}


def train(recs: list[dict], out: Path, a) -> Path:
    from archivesrag.models import resolve_embedder
    from archivesrag.training import _argv_from, _run_in_process, served_length, write_sentence_transformers_files
    base = resolve_embedder("minilm")
    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    model = out / "model"
    if model.exists(): shutil.rmtree(model)
    opts = dict(model_name_or_path=base, train_data=[str(data)], output_dir=str(model), learning_rate=a.lr,
                num_train_epochs=a.epochs, per_device_train_batch_size=a.batch, dataloader_drop_last=True,
                normalize_embeddings=True, temperature=a.temperature, query_max_len=64, passage_max_len=a.passage_max_len,
                train_group_size=a.group, logging_steps=10, query_instruction_for_retrieval="",
                **({"save_strategy": "epoch"} if a.each_epoch else {"save_steps": 100000}),
                sentence_pooling_method="mean", report_to="none", seed=a.seed,
                knowledge_distillation=bool(a.kd))
    t0 = time.perf_counter()
    metrics = _run_in_process(_argv_from(opts))
    print(f"trained {len(recs)} examples in {time.perf_counter() - t0:.0f} s ({metrics.get('train_samples_per_second')} samples/s)")
    for folder in [model, *sorted(model.glob("checkpoint-*"))]:
        for f in model.glob("*token*"):  # a checkpoint must load like the final model
            if not (folder / f.name).exists(): shutil.copy(f, folder / f.name)
        write_sentence_transformers_files(folder, base, "mean", True, served_length(base, 128), "")
    return model


def recipe_reference(runs: list[dict]) -> dict:
    """Per (mining, seed): the per-query figures of the first plain `--pairs recipe` run (make bench's own training)
    recorded. A variant of the schedule is compared with the plain run of its own mining and seed."""
    ref = {}
    for r in runs:
        a = r["args"]
        if a["pairs"] == "recipe" and all(a.get(k, v) == v for k, v in SCHEDULE.items()) and "per_query_validation" in r:
            ref.setdefault((r.get("recipe_mining", "10-100"), a.get("seed", 42)), r["per_query_validation"])
    return ref


def checkpoints(model: Path) -> list[tuple[int, Path]]:
    "(epoch, folder) of each per-epoch checkpoint, in order."
    found = sorted(model.glob("checkpoint-*"), key=lambda f: int(f.name.split("-")[1]))
    return [(n, f) for n, f in enumerate(found, 1)]


def synthetic_held_out(corpus, out: Path = OUT) -> tuple[dict, dict]:
    "The synthetic queries of `make bench`'s held-out documents, each judged by its own document: no human label."
    from archivesrag.corpus import read_jsonl
    from archivesrag.evaluation import queries_from_records
    from archivesrag.negatives import load_split, select_queries
    held = load_split(out / "split.json")["test_ids"]
    queries, qrels, _ = queries_from_records(select_queries(read_jsonl(out / "queries.jsonl"), held), corpus)
    return queries, qrels


def scores_for(model_path: str, corpus, queries: dict, qids: list[str]) -> np.ndarray:
    docs = passage_texts(corpus)  # title + text, as search serves them
    emb = encode(model_path, docs)
    return encode(model_path, [queries[q] for q in qids]) @ emb.T


def evaluate(dense: np.ndarray, lex: np.ndarray, qids, qrels, doc_ids, weights=(1.0, 0.5, 0.0)) -> dict:
    "nDCG@10 and R@100 (ranx) of dense, BM25, and min-max fusions at each dense weight in `weights`."
    from ranx import Qrels, Run, evaluate as rx
    qr = Qrels({q: {d: 1 for d in qrels[q]} for q in qids})
    out = {}
    for w in weights:
        s = w * minmax(dense) + (1 - w) * minmax(lex) if w < 1 else dense
        top = np.argsort(-s, axis=1)[:, :100]
        run = Run({q: {doc_ids[j]: float(s[n, j]) for j in top[n]} for n, q in enumerate(qids)})
        out[f"w={w}"] = {k: round(float(v), 4) for k, v in rx(qr, run, ["ndcg@10", "recall@100"]).items()}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cisi", default=str(REPO.parent / "shared" / "datasets" / "cisi"))
    p.add_argument("--pairs", default="none", choices=["none", "title", "ict", "both", "recipe"],
                   help="both: title and inverse-cloze pairs together (two query styles); recipe: make bench's "
                        "mined LLM queries")
    p.add_argument("--kd", type=int, default=SCHEDULE["kd"])
    p.add_argument("--kd_temp", type=float, default=0.05, help="teacher scores in [0,1] are divided by this")
    p.add_argument("--drop_above_pos", type=int, default=0)
    p.add_argument("--range", default="10-100")
    p.add_argument("--negatives", type=int, default=7)
    p.add_argument("--group", type=int, default=SCHEDULE["group"])
    p.add_argument("--epochs", type=float, default=SCHEDULE["epochs"])
    p.add_argument("--lr", type=float, default=SCHEDULE["lr"])
    p.add_argument("--temperature", type=float, default=SCHEDULE["temperature"])
    p.add_argument("--passage_max_len", type=int, default=SCHEDULE["passage_max_len"], help="tokens of each passage read in training (served at 256)")
    p.add_argument("--batch", type=int, default=SCHEDULE["batch"], help="queries per step: each is the others' in-batch negative")
    p.add_argument("--each_epoch", type=int, default=SCHEDULE["each_epoch"], help="1: score a checkpoint after every epoch (a training run)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--name", default=None)
    p.add_argument("--reeval", default=None, metavar="NAME",
                   help="score the model of an earlier run again, served at the base model's length (earlier runs served "
                        "at the 128 tokens training read)")
    p.add_argument("--score_model", default=None, metavar="DIR",
                   help="score a model trained elsewhere (e.g. by `bench_cisi.py --out DIR` with other mining flags), "
                        "labelled --name")
    a = p.parse_args()
    if a.each_epoch and (a.pairs == "none" or a.reeval): p.error("--each_epoch 1 scores the checkpoints of a training run")
    if a.score_model and not (a.name and (Path(a.score_model) / "sentence_bert_config.json").exists()):
        p.error("--score_model DIR needs a saved model in DIR and a --name for its row")
    if a.score_model and (a.pairs != "none" or a.reeval or a.each_epoch):
        p.error("--score_model scores a model trained elsewhere: leave out --pairs, --reeval and --each_epoch")
    a.range = tuple(int(x) for x in a.range.split("-"))
    corpus, queries, qrels, split = load(a.cisi)
    doc_ids = list(corpus["id"])
    docs = passage_texts(corpus)  # title + text, as search serves them
    from archivesrag.retrieval import build_bm25
    from archivesrag.models import resolve_embedder
    base = resolve_embedder("minilm")
    OUT.mkdir(parents=True, exist_ok=True)
    base_emb = encode(base, docs)
    bm25 = build_bm25(docs)  # one index: the teacher's and the evaluation's
    model_path, info = base, {}
    if a.score_model: model_path, info = a.score_model, {"label": a.name, **bench_recipe(Path(a.score_model).parent)}
    elif a.reeval:  # the same model, served at the base model's length: the run's own args and examples
        model_path = str(OUT / "levers" / a.reeval / "model")
        cfg = Path(model_path) / "sentence_bert_config.json"
        from archivesrag.training import served_length
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "max_seq_length": served_length(base, 128)}, indent=2))
        runs = [json.loads(line) for line in RUNS.read_text().splitlines()]
        first = next(r for r in runs if run_name(r["args"]) == a.reeval and not r["args"].get("reeval"))
        a = argparse.Namespace(**{"score_model": None, **first["args"], "reeval": a.reeval, "cisi": a.cisi,
                                  "range": tuple(first["args"]["range"])})
        info["examples"] = first.get("examples")
    elif a.pairs != "none":
        work = OUT / "levers" / run_name(vars(a))
        work.mkdir(parents=True, exist_ok=True)
        teacher = Teacher(base, docs, base_emb, bm25)
        if a.pairs == "recipe":
            recs, dropped = recipe_records(teacher, doc_ids, a)
            info.update(dropped, **bench_recipe(OUT))  # its mining; its example count is set below
        else:
            pairs = make_pairs(a.pairs, corpus, a.seed)
            bodies = list(corpus["text"])
            body_set = set(bodies)
            recs = mine(pairs, teacher, docs, bodies, lambda pos: "body" if pos in body_set else "doc", a)
        info["examples"] = len(recs)
        model_path = str(train(recs, work, a))
    models = checkpoints(Path(model_path)) if getattr(a, "each_epoch", 0) else [(None, Path(model_path))]
    if not models: raise SystemExit(f"{model_path}: training saved no per-epoch checkpoint")
    for epoch, folder in models:
        served = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        res = {"args": {k: v for k, v in vars(a).items() if k != "cisi"}, **info, "served_tokens": served}
        if a.score_model: res["args"]["score_model"] = os.path.relpath(Path(a.score_model).resolve(), REPO)
        if epoch is not None: res["epoch"] = epoch
        res.setdefault("label", lever_name(res))
        score_run(res, str(folder), corpus, queries, qrels, split, bm25, doc_ids)
        with open(RUNS, "a") as fh: fh.write(json.dumps(res) + "\n")
        print(json.dumps({"lever": res["label"], "validation": res["validation"], "synthetic": res.get("synthetic")}))


def bm25_matrix(bm25, texts: list[str], n_docs: int) -> np.ndarray:
    "BM25 scores of every document for each text [len(texts), n_docs] (0 where BM25 has no match)."
    from archivesrag.retrieval import bm25_search
    idx, sc = bm25_search(bm25, texts, n_docs)
    lex = np.zeros((len(texts), n_docs), dtype=np.float32)
    np.put_along_axis(lex, np.asarray(idx, dtype=np.int64), np.asarray(sc, dtype=np.float32), axis=1)
    return lex


def score_run(res: dict, model_path: str, corpus, queries, qrels, split, bm25, doc_ids):
    "Both halves of the judged queries (and, where `make bench` has run, its held-out synthetic queries) into `res`."
    for half in ("validation", "test"):
        qids = split[half]
        dense = scores_for(model_path, corpus, queries, qids)
        lex = bm25_matrix(bm25, [queries[q] for q in qids], len(doc_ids))
        res[half] = evaluate(dense, lex, qids, qrels, doc_ids, weights=(1.0, 0.7, 0.5, 0.3, 0.0))
        if half == "validation":  # per query, for each lever's interval against the base model
            res["per_query_validation"] = {"dense": per_query_ndcg(dense, qids, qrels, doc_ids),
                                           "fused": per_query_ndcg(0.5 * minmax(dense) + 0.5 * minmax(lex), qids, qrels, doc_ids)}
    if (OUT / "split.json").exists():  # what a user's archive can see: early stopping, the fusion weight
        syn_q, syn_qrels = synthetic_held_out(corpus)
        qids = list(syn_q)
        dense = scores_for(model_path, corpus, syn_q, qids)
        lex = bm25_matrix(bm25, [syn_q[q] for q in qids], len(doc_ids))
        res["synthetic"] = {"n_queries": len(qids), **evaluate(dense, lex, qids, syn_qrels, doc_ids, weights=(1.0, 0.5))}




def lever_name(run: dict) -> str:
    "A lever run in words: its pairs, loss and negatives, and how many tokens the model read when served."
    a = run["args"]
    if a["pairs"] == "none": return "none (base MiniLM)"
    words = [{"title": "title → body", "ict": "inverse cloze", "both": "title + inverse cloze",
              "recipe": "LLM queries (recipe)"}[a["pairs"]], "distilled" if a["kd"] else "InfoNCE"]
    changed = lambda k: a.get(k, SCHEDULE[k]) != SCHEDULE[k]  # older runs lack the flags added since
    if changed("temperature"): words.append(f"temperature {a['temperature']:g}")
    if changed("lr"): words.append(f"learning rate {a['lr']:g}")
    if changed("group"): words.append(f"group {a['group']}")
    if changed("passage_max_len"): words.append(f"training reads {a['passage_max_len']} tok")
    if changed("batch"): words.append(f"batch {a['batch']}")
    if a.get("drop_above_pos"): words.append("teacher-ranked false negatives dropped")
    if run.get("recipe_mining", "10-100") != "10-100": words.append(f"negatives from ranks {run['recipe_mining']}")
    if run.get("epoch") is not None: words.append(f"epoch {run['epoch']} of {a['epochs']:g}")
    elif changed("epochs"): words.append(f"{a['epochs']:g} epochs")
    return ", ".join(words) + f" ({run.get('served_tokens', 256)} tok)"


def per_query_ndcg(scores: np.ndarray, qids, qrels, doc_ids) -> dict[str, float]:
    from ranx import Qrels, Run, evaluate as rx
    top = np.argsort(-scores, axis=1)[:, :100]
    run = Run({q: {doc_ids[j]: float(scores[n, j]) for j in top[n]} for n, q in enumerate(qids)})
    qr = Qrels({q: {d: 1 for d in qrels[q]} for q in qids})
    rx(qr, run, "ndcg@10")
    return {q: float(run.scores["ndcg@10"].get(q, 0.0)) for q in qids}


if __name__ == "__main__":
    main()
