"""`make bench`: run every benchmark, then merge them into outputs/bench/bench.json and docs/benchmarks.md.

    python benchmarks/run_all.py [--only e2e e2e_neocascade selectors] [--report-only]

Each script writes ``outputs/bench/<name>.json``; the repeats below keep the whole run near 15 min on
2 cores of an idle machine. ``benchmarks/report.py`` then merges the JSONs (keys named after the steps,
plus ``quadrants_per_s_e2e``) and writes ``docs/benchmarks.md`` and ``docs/bench.png``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# part -> (benchmarks/bench_<script>.py, its arguments for `make bench`: fewer repeats than the script's default)
SCRIPTS = {
    "e2e": ("e2e", ["--images", "2", "--repeats", "3"]),  # the seed's final cascade
    "e2e_neocascade": ("e2e", ["--images", "2", "--repeats", "3", "--artifact", "packaged", "--no-compile",
                               "--out", str(HERE.parent / "outputs/bench/e2e_neocascade.json")]),
    "selectors": ("selectors", ["--images", "3", "--repeats", "3"]),
    "candidates": ("candidates", ["--repeats", "5"]),
    "simulator": ("simulator", ["--runs", "5", "--out", str(HERE.parent / "outputs/bench/simulator.json")]),
    "training": ("training", ["--runs", "2", "--rf-samples", "10000"]),
    "dask": ("dask", ["--quadrants", "12"]),  # serial loop vs Dask 1 and 2 workers; writes its own docs section
    "skies": ("skies", ["--images", "2", "--repeats", "3"]),  # the shipped detector on crowded / long-trail skies
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCRIPTS), default=None)
    parser.add_argument("--report-only", action="store_true", help="only merge existing JSONs into the report")
    args = parser.parse_args(argv)
    failed = []
    if not args.report_only:
        scripted = {stem for stem, _ in SCRIPTS.values()}
        extra = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py") if p.stem[len("bench_"):] not in scripted)
        for name in (args.only or [*SCRIPTS, *extra]):
            stem, extra_args = SCRIPTS.get(name, (name, []))
            script = HERE / f"bench_{stem}.py"
            print(f"==> {name}: {script.name} {' '.join(extra_args)}", flush=True)
            start = time.perf_counter()
            if subprocess.run([sys.executable, str(script), *extra_args], check=False).returncode != 0:
                failed.append(name)
            print(f"    {name}: {time.perf_counter() - start:.0f} s", flush=True)
    if subprocess.run([sys.executable, str(HERE / "report.py")], check=False).returncode != 0:
        failed.append("report.py")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
