"""Training throughput on this machine: samples/second fine-tuning on the sample archive, and the output folder.

    python bench/bench_training.py                      # CPU, bundled MiniLM, the seed's lengths (64/256), 3 steps
    python bench/bench_training.py --max_steps 0        # one full epoch over the sample archive
    python bench/bench_training.py --fp16 --model minilm  # on a CUDA machine: the GPU check (fp16 steps, then encode)

Prints figures only; nothing is asserted. Training data: titles of the sample archive as queries, the passage as
positive, 7 random other passages as negatives (the same shape as mined data; the speed does not depend on which
negatives they are).
"""
import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path


def _quiet_tokenizers_on_cpu():
    "Tokenizer threads compete with torch for a CPU's few cores; on a GPU they keep it fed (2x encode speed): leave them on."
    import torch
    if not torch.cuda.is_available(): os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="base model (default: the bundled MiniLM)")
    p.add_argument("--batch", type=int, default=16, help="per_device_train_batch_size")
    p.add_argument("--query_max_len", type=int, default=64)
    p.add_argument("--passage_max_len", type=int, default=256)
    p.add_argument("--train_group_size", type=int, default=2)
    p.add_argument("--max_steps", type=int, default=3, help="0: one full epoch")
    p.add_argument("--fp16", action="store_true", help="CUDA only")
    p.add_argument("--output_dir", default=None)
    a = p.parse_args(argv)

    import torch
    _quiet_tokenizers_on_cpu()
    from archivesrag.core import write_jsonl
    from archivesrag.corpus import load_sample
    from archivesrag.models import get_device
    from archivesrag.training import count_steps, load_log_history, loss_summary, st_pooling_mode, train

    corpus = load_sample(verbose=False)
    rng, texts = random.Random(0), corpus["text"]
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = work / "query_minedHN.jsonl"
    write_jsonl([{"query": r["title"], "pos": [r["text"]], "neg": rng.sample([t for t in texts if t != r["text"]], 7)}
                 for r in corpus], data)
    out = Path(a.output_dir) if a.output_dir else work / "model"
    print(f"device: {get_device()} ({torch.cuda.get_device_name(0) if torch.cuda.is_available() else f'{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads'})")
    print(f"data: {len(corpus)} examples; batch {a.batch}, group {a.train_group_size}, lengths {a.query_max_len}/{a.passage_max_len}")
    extra = {"max_steps": a.max_steps} if a.max_steps else {}
    t0 = time.time()
    train(data, out, model_name_or_path=a.model, per_device_train_batch_size=a.batch, num_train_epochs=1,
          query_max_len=a.query_max_len, passage_max_len=a.passage_max_len, train_group_size=a.train_group_size,
          fp16=a.fp16, logging_steps=1, save_steps=10**6, **extra)
    wall = time.time() - t0
    s = loss_summary(load_log_history(out))
    sps = s.get("train_samples_per_second", 0)
    seed_steps = count_steps(len(corpus), 32, 5)
    print(f"\ntrain_samples_per_second: {sps:.3f}   steps: {s['steps']}   train_runtime: {s.get('train_runtime', 0):.1f} s   "
          f"wall incl. loading: {wall:.1f} s")
    if sps:
        print(f"estimate for the seed's run on the sample archive ({len(corpus)} x 5 epochs, {seed_steps} steps of 32): "
              f"{len(corpus) // 32 * 32 * 5 / sps / 60:.1f} min")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
          + (f", peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if torch.cuda.is_available() else ""))
    print(f"\n{out}:")
    for f in sorted(out.rglob("*")):
        if f.is_file(): print(f"  {f.relative_to(out)}  {f.stat().st_size:,} B")
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(out), device=get_device())
    emb = st.encode(["What is the InterPARES Trust project about?", corpus[0]["text"]])
    print(f"\nencoded with SentenceTransformer: shape {emb.shape}, pooling {st_pooling_mode(st)}, "
          f"cosine(query, passage 0) = {float(emb[0] @ emb[1]):.3f}")


if __name__ == "__main__":
    sys.exit(main())
