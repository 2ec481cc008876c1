"""Speed of the simulator: seconds per full ZTF quadrant (3080 x 3072) on one core.

Run: ``python benchmarks/bench_simulator.py [--runs 7]``; prints the median and writes
outputs/bench/simulator.json. The target is <= 0.5 s per quadrant.
"""

from __future__ import annotations

import os

# one core: pin the BLAS and OpenMP pools before numpy loads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from neocascade.simulation import SIMULATOR_VERSION, SimConfig, simulate_image  # noqa: E402
from neocascade.utils.atomic import save_json  # noqa: E402

TARGET_S = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed quadrants (after one warm-up)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/simulator.json"))
    args = parser.parse_args()
    config = SimConfig()
    simulate_image(config, seed=0, file_index=0, image_index=0)  # warm-up: imports, page faults
    times = []
    load_before = os.getloadavg()[0]
    for i in range(args.runs):
        start = time.perf_counter()
        simulate_image(config, seed=0, file_index=0, image_index=i + 1)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    result = {
        "benchmark": "simulate_image, full quadrant",
        "shape": list(config.shape),
        "n_asteroids": config.n_asteroids,
        "runs": args.runs,
        "seconds_median": round(median, 4),
        "seconds_min": round(float(np.min(times)), 4),
        "seconds_all": [round(t, 4) for t in times],
        "target_seconds": TARGET_S,
        "meets_target": median <= TARGET_S,
        "threads": 1,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "simulator": SIMULATOR_VERSION,
    }
    save_json(args.out, result, overwrite=True)
    print(f"simulate_image {config.shape[0]}x{config.shape[1]}: median {median:.3f} s over {args.runs} runs "
          f"(min {min(times):.3f} s; target <= {TARGET_S} s; load {load_before:.1f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
