"""Candidate selectors on full quadrants: our local-maxima selector (and the seed's footprint) against ``sep``.

    python benchmarks/bench_selectors.py [--images 3] [--repeats 3] [--threads 1]

``sep`` (Source Extractor as a library, the field's usual tool; ``pip install 'neocascade[bench]'``) runs its
own pipeline: background and rms map in 128-px boxes (our noise box), a matched 3×3 filter, a 5σ
threshold, 5-px minimum area, deblending. Ours: the NaN-aware Gaussian filter (sigma 1) then
``local_maxima`` (SNR ≥ 5 against the local noise in 128-px boxes, 5 px apart), and the seed's
footprint (brightest pixel of each 50-px block). All on the same simulated quadrants with truth;
completeness = share of injected asteroids with a candidate within ``radius`` px of the centre.
Both are timed single-threaded (sep has no threads). Without sep installed, only ours are measured and
a note says so. Writes ``outputs/bench/selectors.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
SIGMA, THRESHOLD, MIN_DISTANCE, NOISE_BOX, KERNEL = 1.0, 5.0, 5, 128, 50  # conf/data + conf/selector/peaks.yaml
RADII = (1.0, 3.0)  # px: the seed's centre rule, and a looser one for centroids of trailed sources


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def completeness(x: np.ndarray, y: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """Per asteroid (truth rows): whether a candidate (x = col, y = row) lies within ``radius`` px."""
    if truth.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    if x.size == 0:
        return np.zeros(truth.shape[0], dtype=bool)
    dist, _ = cKDTree(np.column_stack([x, y])).query(truth[:, 1:3], k=1)
    return dist <= radius


def _ours(image: np.ndarray) -> dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    from neocascade.candidates.footprint import footprint_peaks
    from neocascade.candidates.peaks import local_maxima
    from neocascade.preprocess.filters import gaussian_filter, mask_invalid

    def peaks():
        rows, cols = local_maxima(gaussian_filter(mask_invalid(image), sigma=SIGMA), threshold=THRESHOLD,
                                  min_distance=MIN_DISTANCE, noise_box=NOISE_BOX)
        return cols.astype(float), rows.astype(float)

    def footprint():
        rows, cols = footprint_peaks(gaussian_filter(mask_invalid(image), sigma=SIGMA), kernel=KERNEL, stride=KERNEL)
        return cols.astype(float), rows.astype(float)

    return {"local_maxima": peaks, "footprint": footprint}


def _sep(image: np.ndarray, sep) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def run():
        mask = ~np.isfinite(image) | (image == 0)
        data = np.where(mask, 0.0, image).astype(np.float64)
        bkg = sep.Background(data, mask=mask, bw=NOISE_BOX, bh=NOISE_BOX)
        objects = sep.extract(data - bkg.back(), THRESHOLD, err=bkg.rms(), mask=mask, minarea=5)
        return np.asarray(objects["x"], float), np.asarray(objects["y"], float)

    return run


def run(images: int, repeats: int, threads: int) -> dict:
    from neocascade.simulation import SimConfig, simulate_image

    torch.set_num_threads(threads)
    try:
        import sep

        sep.set_extract_pixstack(5_000_000)
        sep.set_sub_object_limit(4096)
        sep_version = sep.__version__
    except ImportError:
        sep, sep_version = None, None
        print("note: sep is not installed (pip install 'neocascade[bench]'); comparing our selectors only")
    quads = [simulate_image(SimConfig(), seed=2021, file_index=98, image_index=i) for i in range(images)]
    names = ["local_maxima", "footprint"] + (["sep"] if sep is not None else [])
    times = {n: [] for n in names}
    found = {n: {r: [] for r in RADII} for n in names}
    counts = {n: [] for n in names}
    mags = np.concatenate([t[:, 3] for _, t in quads])
    for image, truth in quads:
        runners = _ours(image)
        if sep is not None:
            runners["sep"] = _sep(image, sep)
        for name in names:
            times[name].append(_median_time(runners[name], repeats))
            x, y = runners[name]()
            counts[name].append(int(x.size))
            for r in RADII:
                found[name][r].append(completeness(x, y, truth, r))
    bright = mags < 19.0
    result = {"images": images, "repeats": repeats, "threads": threads, "sep_version": sep_version,
              "settings": {"sigma": SIGMA, "threshold_snr": THRESHOLD, "min_distance": MIN_DISTANCE,
                           "noise_box": NOISE_BOX, "footprint_kernel": KERNEL, "sep_minarea": 5},
              "n_asteroids": int(mags.size), "load_average": list(os.getloadavg()), "selectors": {}}
    for name in names:
        entry = {"seconds_per_quadrant": float(np.median(times[name])),
                 "candidates_per_quadrant": float(np.mean(counts[name]))}
        for r in RADII:
            hit = np.concatenate(found[name][r])
            entry[f"completeness_r{r:g}"] = float(hit.mean())
            entry[f"completeness_r{r:g}_mag_lt_19"] = float(hit[bright].mean()) if bright.any() else float("nan")
            entry[f"completeness_r{r:g}_mag_ge_19"] = float(hit[~bright].mean()) if (~bright).any() else float("nan")
        result["selectors"][name] = entry
    if sep is not None:
        result["sep_over_local_maxima_time"] = (result["selectors"]["sep"]["seconds_per_quadrant"]
                                                / result["selectors"]["local_maxima"]["seconds_per_quadrant"])
    else:
        result["note"] = "sep not installed: comparison skipped"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench/selectors.json")
    args = parser.parse_args(argv)
    from neocascade.utils.atomic import save_json

    result = run(args.images, args.repeats, args.threads)
    print(f"{'selector':14s} {'s/quadrant':>10s} {'cands':>8s} " + " ".join(f"{'compl r=' + format(r, 'g'):>11s}" for r in RADII))
    for name, e in result["selectors"].items():
        print(f"{name:14s} {e['seconds_per_quadrant']:10.3f} {e['candidates_per_quadrant']:8.0f} "
              + " ".join(f"{e[f'completeness_r{r:g}']:11.3f}" for r in RADII))
    save_json(args.out, result, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
