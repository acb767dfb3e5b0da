"""Load time and peak memory of a large EAD finding aid (issue 25: ~5 MB, ~7,500 components, under 30 s and 1 GB).

    python bench/bench_ead.py [--components 7500] [--keep DIR]

Writes a synthetic EAD 2002 file (fonds > 15 series > 50 files > 10 items, each with a scope note and a date) into a
temporary folder, then loads it with `archivesrag.archives.load_archive` in a fresh subprocess, so the peak memory
(ru_maxrss of that process, and tracemalloc's peak of Python allocations) is the loader's, not this script's.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, tracemalloc
from archivesrag.archives import load_archive
trace = sys.argv[2] == "trace"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if trace: tracemalloc.start()
t0 = time.perf_counter()
recs, counts = load_archive(sys.argv[1])
secs = time.perf_counter() - t0
print(json.dumps({"seconds": round(secs, 2), "records": len(recs),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_before_load_mb": round(base / 1024, 1),
                  "tracemalloc_peak_mb": round(tracemalloc.get_traced_memory()[1] / 2**20, 1) if trace else None,
                  "closed": counts.get("access:closed", 0), "internal_dropped": counts.get("internal_dropped", 0)}))
"""


def run_child(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_ead(path: Path, n_components: int) -> int:
    "A plausible EAD 2002 finding aid with about `n_components` components; returns the number written."
    n_series = 15
    per_series = max(1, n_components // n_series)
    n_files = max(1, per_series // 11)
    words = ("harbour dredging minutes wharf lease pilotage accounts letters survey plans tide lighthouse crew "
             "ledger salvage quay customs ballast mooring ferry").split()
    def note(i, k):
        return " ".join(words[(i * 7 + j * 3 + k) % len(words)] for j in range(60))
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<ead xmlns="urn:isbn:1-931666-22-9">\n'
                '<eadheader><eadid>bench-ead</eadid></eadheader>\n<archdesc level="fonds"><did><unittitle>Benchmark '
                'fonds</unittitle><unitid>BEN</unitid><unitdate normal="1850/1990">1850-1990</unitdate>'
                '<origination><corpname>Benchmark Harbour Board</corpname></origination></did>\n'
                '<accessrestrict><p>Open for research.</p></accessrestrict><scopecontent><p>' + note(0, 0) +
                '</p></scopecontent>\n<dsc>\n')
        for s in range(1, n_series + 1):
            rule = "<accessrestrict><p>Closed until 2060.</p></accessrestrict>" if s % 5 == 0 else ""
            f.write(f'<c01 id="s{s}" level="series"><did><unittitle>Series {s}</unittitle><unitid>{s}</unitid>'
                    f'<unitdate normal="{1850 + s}/{1950 + s}">{1850 + s}-{1950 + s}</unitdate></did>{rule}'
                    f'<scopecontent><p>{note(s, 1)}</p></scopecontent>\n'); count += 1
            for fi in range(1, n_files + 1):
                y = 1850 + (s * 7 + fi) % 140
                f.write(f'<c02 id="s{s}-f{fi}" level="file"><did><unittitle>File {s}.{fi}</unittitle><unitid>{fi}</unitid>'
                        f'<unitdate>{y}-{y + 3}</unitdate></did><scopecontent><p>{note(s * 100 + fi, 2)}</p></scopecontent>\n')
                count += 1
                for it in range(1, 11):
                    if count >= n_components: break
                    f.write(f'<c03 level="item"><did><unittitle>Item {s}.{fi}.{it}</unittitle><unitid>{it}</unitid>'
                            f'<unitdate normal="{y}">{y}</unitdate></did><scopecontent><p>{note(s * 1000 + fi * 10 + it, 3)}'
                            f'</p></scopecontent><odd audience="internal"><p>staff note {count}</p></odd></c03>\n')
                    count += 1
                f.write('</c02>\n')
            f.write('</c01>\n')
        f.write('</dsc></archdesc></ead>\n')
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=7500)
    ap.add_argument("--keep", help="write the file into this folder and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp); folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bench-ead.xml"
        n = write_ead(path, args.components)
        size_mb = path.stat().st_size / 2**20
        res = run_child(path, "time")      # timing and RSS without tracemalloc (which slows Python several-fold)
        tr = run_child(path, "trace")       # Python allocations' peak, in a second fresh process
    print(f"EAD file: {size_mb:.1f} MB, {n} components written (+1 archdesc)")
    print(f"load_archive: {res['seconds']} s, {res['records']} records, peak RSS {res['peak_rss_mb']} MB "
          f"(interpreter and imports before loading: {res['rss_before_load_mb']} MB), "
          f"tracemalloc peak {tr['tracemalloc_peak_mb']} MB (that run took {tr['seconds']} s); "
          f"closed {res['closed']}, internal notes dropped {res['internal_dropped']}")
    print("target (issue 25): under 30 s and under 1 GB on 2 cores:",
          "met" if res["seconds"] < 30 and res["peak_rss_mb"] < 1024 else "NOT met")


if __name__ == "__main__":
    main()
