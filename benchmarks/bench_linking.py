"""Speed of linking one full ZTF field: 64 quadrants x 3 epochs of detections, on one core.

    python benchmarks/bench_linking.py [--repeats 5] [--false 100] [--movers 10] [--transients 12]

A synthetic field (8 x 8 quadrants of 3080 x 3072 px at 1.01"/px, ~7 x 7 deg) observed at three
epochs 30 min apart: per quadrant and epoch ``--false`` chance detections, ``--movers`` asteroids
(rates log-uniform 0.1-10 deg/day, random directions, 0.3" position noise) and ``--transients``
stationary sources. Prints the median wall and CPU time of :func:`link_detections` (``conf/link``
defaults) after one warm-up, the candidate pairs, and how well the synthetic truth
was recovered; writes ``outputs/bench/linking.json``. The issue's target: <= 5 s on one core.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the target says

import numpy as np  # noqa: E402

from neocascade.linking import from_tangent_plane, link_detections  # noqa: E402
from neocascade.utils.atomic import save_json  # noqa: E402

QUADRANT_DEG = (3072 * 1.01 / 3600, 3080 * 1.01 / 3600)  # width, height of a quadrant on the sky
GRID = 8  # 8 x 8 quadrants = 16 CCDs x 4
TIMES = 60200.2 + np.array([0.0, 30.0, 60.0]) / 1440.0
RA0, DEC0 = 150.0, 20.0


def synthetic_field(rng: np.random.Generator, *, n_false: int, n_movers: int, n_transients: int) -> tuple[dict, np.ndarray]:
    """Detections of one field (dict of arrays) and each detection's object: >= 0 mover, -2 transient, -1 false."""
    n_quad = GRID * GRID
    half_w, half_h = GRID * QUADRANT_DEG[0] / 2, GRID * QUADRANT_DEG[1] / 2
    noise = 0.3 / 3600
    m = n_quad * n_movers
    start = np.column_stack([rng.uniform(-half_w, half_w, m), rng.uniform(-half_h, half_h, m)])
    rate = 10 ** rng.uniform(-1, 1, m)
    pa = rng.uniform(0, 2 * np.pi, m)
    velocity = np.column_stack([rate * np.sin(pa), rate * np.cos(pa)])
    s = n_quad * n_transients
    fixed = np.column_stack([rng.uniform(-half_w, half_w, s), rng.uniform(-half_h, half_h, s)])
    xy, epoch, obj = [], [], []
    for e, t in enumerate(TIMES):
        f = n_quad * n_false
        xy += [start + velocity * (t - TIMES[0]) + rng.normal(0, noise, (m, 2)),
               fixed + rng.normal(0, noise, (s, 2)),
               np.column_stack([rng.uniform(-half_w, half_w, f), rng.uniform(-half_h, half_h, f)])]
        epoch += [np.full(m + s + f, e)]
        obj += [np.arange(m), np.full(s, -2), np.full(f, -1)]
    xy, epoch, obj = np.concatenate(xy), np.concatenate(epoch), np.concatenate(obj)
    ra, dec = from_tangent_plane(xy[:, 0], xy[:, 1], ra0=RA0, dec0=DEC0)
    score = np.where(obj == -1, rng.uniform(0.3, 1.0, obj.size), rng.uniform(0.5, 1.0, obj.size))
    det = {"exposure": epoch, "mjd": TIMES[epoch], "ra": ra, "dec": dec, "x": xy[:, 0], "y": xy[:, 1],
           "score": score, "exptime": np.full(obj.size, 30.0)}
    return det, obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--false", type=int, default=100, help="chance detections per quadrant and epoch")
    parser.add_argument("--movers", type=int, default=10, help="asteroids per quadrant")
    parser.add_argument("--transients", type=int, default=12, help="stationary sources per quadrant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "outputs/bench/linking.json")
    args = parser.parse_args()
    det, obj = synthetic_field(np.random.default_rng(args.seed), n_false=args.false, n_movers=args.movers,
                               n_transients=args.transients)
    options = {"threshold": 0.5, "pair_min_score": 0.9}  # conf/link/default.yaml
    result = link_detections(det, **options)
    wall, cpu = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = link_detections(det, **options)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    linked = result.tracklet >= 0
    ids, first = np.unique(result.tracklet[linked], return_index=True)
    owners = obj[linked]
    order = np.argsort(result.tracklet[linked], kind="stable")
    groups = np.split(owners[order], np.flatnonzero(np.diff(result.tracklet[linked][order])) + 1)
    pure = np.array([g[0] >= 0 and (g == g[0]).all() for g in groups]) if groups and groups[0].size else np.zeros(0, bool)
    found = np.unique([g[0] for g, p in zip(groups, pure) if p])
    movers = int(obj.max()) + 1
    report = {
        "detections": int(obj.size),
        "per_quadrant_epoch": args.false + args.movers + args.transients,
        "wall_s_median": float(np.median(wall)),
        "cpu_s_median": float(np.median(cpu)),
        "candidate_pairs": int(result.n_pairs),
        "tracklets": int(ids.size),
        "tracklet_purity": float(pure.mean()) if pure.size else float("nan"),
        "mover_completeness": found.size / movers,
        "transients_flagged": float(result.stationary[obj == -2].mean()),
        "target_s": 5.0,
    }
    for key, value in report.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    save_json(args.out, report, overwrite=True)


if __name__ == "__main__":
    main()
