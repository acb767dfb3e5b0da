"""The installed llama.cpp runs on any x86-64 CPU with AVX2, not only on the one it was built on.

A `-march=native` build on a CPU with AVX-512 or AMX holds instructions that die with SIGILL elsewhere, and pip's
cache carries such a wheel to other machines. These tests read the installed library itself, so they fail however a
non-portable build got there: built here, or taken from a cache. `colab_setup.sh` holds the build flags and the
allow-list; `make install` runs it.
"""
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archivesrag.models import bundled_gguf_path

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the allow-list is for x86-64")
llama_cpp = pytest.importorskip("llama_cpp")

ROOT = Path(__file__).resolve().parents[1]


def allowed_isa() -> set[str]:
    "The allow-list, read from colab_setup.sh: the one place that says how llama.cpp is built."
    m = re.search(r'^LLAMA_ALLOWED_ISA="([^"]+)"', (ROOT / "colab_setup.sh").read_text(), re.M)
    return set(m.group(1).split())


def reported_isa(info: str) -> set[str]:
    "Instruction sets that `llama_print_system_info` says are on (`AVX2 = 1`)."
    return {k for k, v in re.findall(r"\b([A-Z][A-Z0-9_]*) = (\d)", info) if v == "1"
            and re.match(r"(SSE|SSSE|AVX|AMX|BMI|F16C|FMA|VNNI|VBMI)", k)}


# What objdump prints for instructions a Haswell lacks: AMX tiles, AVX-512 (zmm registers, the upper 16 vector
# registers or mask registers that only EVEX can name), and VNNI dot products (AVX-VNNI is VEX-encoded, so it has
# no zmm to give it away).
NEWER_THAN_AVX2 = re.compile(r"\b(ldtilecfg|sttilecfg|tileloadd\w*|tilestored|tilezero|tilerelease|tdp\w+)\b"
                             r"|%zmm\d+|%[xy]mm(1[6-9]|2\d|3[01])\b|%k[1-7]\b|\bvpdp(bu|ws)sd")


def ggml_libraries() -> list[Path]:
    lib = Path(llama_cpp.__file__).parent / "lib"
    return sorted(p for p in lib.glob("lib*.so*") if p.is_file() and not p.is_symlink())


def newer_instructions(so: Path, limit: int = 5) -> list[str]:
    "Up to `limit` disassembled lines of `so` that use an instruction newer than AVX2."
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if NEWER_THAN_AVX2.search(line)][:limit]


@pytest.mark.fast
def test_allow_list_is_the_haswell_set():
    assert allowed_isa() == {"SSE3", "SSSE3", "SSE42", "AVX", "AVX2", "BMI2", "F16C", "FMA"}


@pytest.mark.fast
def test_system_info_lists_only_allowed_instruction_sets():
    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info, info   # the build is not a bare SSE one either: it uses what every target has
    assert reported_isa(info) <= allowed_isa(), f"built for {sorted(reported_isa(info) - allowed_isa())}: {info}"


@pytest.mark.fast
def test_reported_isa_reads_a_native_build():
    "The check above catches what a native build on an AMX host reports (llama.cpp 0.3.36's format)."
    native = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
              "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
              "OPENMP = 1 | REPACK = 1 |")
    assert reported_isa(native) - allowed_isa() == {"AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                                                    "AVX512_BF16", "AMX_INT8"}


@pytest.mark.timeout(150)
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_libraries_hold_no_instruction_newer_than_avx2():
    "Not in the fast tier (12-30 s of objdump): a code change does not rebuild llama.cpp, and the check above catches a"
    " native build in milliseconds."
    libs = ggml_libraries()
    assert any("ggml-cpu" in p.name for p in libs), [p.name for p in libs]
    found = {p.name: newer_instructions(p) for p in libs}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


@pytest.mark.fast
def test_the_objdump_pattern_catches_each_newer_set():
    for line in ["tileloadd (%rax,%rdx,1),%tmm0", "vmovups %zmm0,(%rax)", "vaddps %ymm17,%ymm1,%ymm2",
                 "kmovw %k1,%eax", "{vex} vpdpbusd %ymm2,%ymm1,%ymm0", "ldtilecfg (%rsp)"]:
        assert NEWER_THAN_AVX2.search(line), line
    for line in ["vfmadd231ps %ymm2,%ymm1,%ymm0", "vcvtph2ps %xmm0,%ymm1", "vpmaddubsw %ymm1,%ymm2,%ymm3",
                 "vmovdqu %ymm15,(%rax)", "shlx %rax,%rbx,%rcx"]:
        assert not NEWER_THAN_AVX2.search(line), line


@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="Debian's qemu-user is not installed")
def test_a_completion_runs_on_a_haswell():
    "One short completion with every instruction a Haswell lacks made illegal (qemu-user's Haswell model)."
    code = ("import llama_cpp, sys; llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False); "
            "out = llm('The archive holds', max_tokens=4, temperature=0); print('tokens', out['usage']['completion_tokens'])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code, str(bundled_gguf_path())],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, f"exit {run.returncode} under a Haswell (-4: SIGILL, an instruction a Haswell lacks): {run.stderr[-1500:]}"
    assert re.search(r"tokens [1-4]\b", run.stdout), run.stdout
