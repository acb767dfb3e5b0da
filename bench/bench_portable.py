"""What portability costs: query generation (local backend, bundled SmolLM2) with the portable llama.cpp build that
`make install` makes (AVX2, FMA, F16C: any x86-64 since Haswell) against the best build that runs on this host
(`-march=native`, without AMX where the CPU has it, since AMX kernels die with SIGILL here), in one run, side by side,
on the same passages, alternating the builds to share out the machine's drift.

    python bench/bench_portable.py --build_native /tmp/llama-native     # builds it first (minutes), then measures
    python bench/bench_portable.py --native_dir /tmp/llama-native       # a native build already there
    [--n 12] [--rounds 2] [--threads 2]

The native build goes into a folder of its own (`pip install --target`), put first on PYTHONPATH for its runs, so the
project's environment keeps its portable build.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import offline_env

ROOT = Path(__file__).resolve().parents[1]
# -march=native, minus AMX: GCC lets an explicit -mno-* win over what -march implies, whatever their order.
NATIVE_ENV = {"CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF",
              "CFLAGS": "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
              "CXXFLAGS": "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"}


def build_native(target: Path) -> None:
    "Build llama-cpp-python for this CPU into `target` (a folder of its own, never the project's environment)."
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-binary", "llama-cpp-python",
                        "--no-deps", "-w", wheels, "llama-cpp-python>=0.3"], check=True, env={**os.environ, **NATIVE_ENV})
        wheel = next(Path(wheels).glob("llama_cpp_python-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                       check=True)


def worker(n: int, threads: int) -> None:
    "One timed generation run with whichever llama_cpp is first on the path; prints one JSON line."
    import llama_cpp
    from archivesrag.corpus import load_sample
    from archivesrag.llm import LocalLLM
    from archivesrag.queries import generate_queries
    ds = load_sample(verbose=False)
    passages = [ds[i] for i in range(0, len(ds), max(1, len(ds) // n))][:n]
    llm = LocalLLM(n_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        s = generate_queries(passages, Path(tmp) / "q.jsonl", llm=llm, max_passage_words=80, progress=False,
                             verbose=False)
    isa = " ".join(k for k, v in (kv.split(" = ") for kv in llama_cpp.llama_print_system_info().decode()
                                  .replace("CPU : ", "").split(" | ") if " = " in kv) if v.strip() == "1")
    print(json.dumps({"docs_per_s": s["passages_per_s"], "seconds": s["seconds"], "done": s["done"], "isa": isa}))


def timed_run(native_dir: Path | None, n: int, threads: int) -> dict:
    env = offline_env()
    if native_dir: env["PYTHONPATH"] = os.pathsep.join([str(native_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, "--worker", "--n", str(n), "--threads", str(threads)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode: raise SystemExit(f"worker failed (exit {out.returncode}; 132 is SIGILL):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--native_dir", type=Path, help="a folder holding a native llama_cpp (pip install --target)")
    p.add_argument("--build_native", type=Path, help="build the native llama_cpp into this new folder first")
    p.add_argument("--n", type=int, default=12, help="passages per run [12]")
    p.add_argument("--rounds", type=int, default=2, help="runs of each build, alternating [2]")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads [2]")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: return worker(a.n, a.threads)
    if a.build_native:
        if a.build_native.exists(): raise SystemExit(f"{a.build_native}: exists; give a new folder")
        build_native(a.build_native)
    native = a.build_native or a.native_dir
    if not native: raise SystemExit("give --native_dir or --build_native")
    builds = {"portable (make install)": None, "native, no AMX": native}
    rates = {name: [] for name in builds}
    for r in range(a.rounds):
        for name, where in builds.items():
            res = timed_run(where, a.n, a.threads)
            rates[name].append(res["docs_per_s"])
            print(f"round {r + 1}  {name:<24} {res['docs_per_s']:.3f} documents/s ({res['done']} of {a.n} in "
                  f"{res['seconds']:.1f} s; load {os.getloadavg()[0]:.1f})  built for: {res['isa']}", flush=True)
    port, nat = (statistics.median(v) for v in rates.values())
    print(f"\nmedian documents/s: portable {port:.3f}, native {nat:.3f}; portable / native = {port / nat:.2f} "
          f"({os.cpu_count()} CPUs, {a.threads} threads, {a.n} sample passages, first 80 words each)")


if __name__ == "__main__":
    main()
