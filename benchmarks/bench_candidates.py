"""Speed of the candidate path on a full 3080×3072 quadrant: filter, footprint, cutouts, extraction.

    python benchmarks/bench_candidates.py [--repeats 7] [--threads 1 2]

Prints a table and writes ``outputs/bench/candidates.json``. Each figure is the median wall time of
``--repeats`` runs after one warm-up; CPU time is reported beside it because a busy machine
inflates wall time. The baselines are ``scipy.ndimage.gaussian_filter`` (mode 'reflect', our
border rule) and a per-block Python loop of ``np.argmax``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.ndimage as ndi
import torch

from neocascade.candidates.cutouts import cutouts
from neocascade.candidates.extract import extract_candidates
from neocascade.candidates.footprint import FootprintSelector, footprint_peaks
from neocascade.preprocess.filters import gaussian_filter
from neocascade.utils.atomic import save_json

SHAPE = (3080, 3072)  # a ZTF CCD quadrant
KERNEL = 50  # the seed's footprint
SIGMA = 1.0  # the seed's filter


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def _footprint_loop(image: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: a Python loop over whole blocks, nanargmax in each."""
    rows, cols = [], []
    for r0 in range(0, image.shape[0] - kernel + 1, kernel):
        for c0 in range(0, image.shape[1] - kernel + 1, kernel):
            block = image[r0 : r0 + kernel, c0 : c0 + kernel]
            r, c = np.unravel_index(np.nanargmax(block), block.shape)
            rows.append(r0 + r)
            cols.append(c0 + c)
    return np.array(rows), np.array(cols)


def _images(seed: int = 0) -> dict[str, np.ndarray]:
    """A noise quadrant with a few NaN pixels, and one with a 20-px dead border as well."""
    rng = np.random.default_rng(seed)
    few_nan = rng.normal(scale=6.0, size=SHAPE).astype(np.float32)
    few_nan[rng.integers(0, SHAPE[0], 50), rng.integers(0, SHAPE[1], 50)] = np.nan
    border = few_nan.copy()
    border[:, :20] = np.nan
    return {"few_nan": few_nan, "dead_border": border}


def run(repeats: int, threads: list[int]) -> dict:
    """Time every step for each thread count; return the results as a JSON-ready dict."""
    images = _images()
    image = images["few_nan"]
    results: dict = {"shape": list(SHAPE), "repeats": repeats, "sigma": SIGMA, "kernel": KERNEL,
                     "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "rows": []}
    filtered = gaussian_filter(image, sigma=SIGMA)
    rows, cols = footprint_peaks(filtered, kernel=KERNEL, stride=KERNEL, edge="drop")
    loop_rows, loop_cols = _footprint_loop(filtered, KERNEL)
    if not (np.array_equal(np.sort(rows * SHAPE[1] + cols), np.sort(loop_rows * SHAPE[1] + loop_cols))):
        raise RuntimeError("footprint_peaks disagrees with the block loop")
    for n in threads:
        torch.set_num_threads(n)
        row: dict = {"threads": n}
        for name, img in images.items():
            ref = ndi.gaussian_filter(img, SIGMA, mode="reflect")
            row[f"scipy_gaussian_{name}"] = _time(lambda: ndi.gaussian_filter(img, SIGMA, mode="reflect"), repeats)
            row[f"gaussian_{name}"] = _time(lambda: gaussian_filter(img, sigma=SIGMA), repeats)
            ours = gaussian_filter(img, sigma=SIGMA)
            clean = np.isfinite(ours) & np.isfinite(ref)
            row[f"gaussian_{name}_max_abs_diff_clean"] = float(np.abs(ours - ref)[clean & ~_near_nan(img)].max())
        no_nan = np.nan_to_num(image)
        row["gaussian_no_nan"] = _time(lambda: gaussian_filter(no_nan, sigma=SIGMA), repeats)
        row["footprint_k50"] = _time(lambda: footprint_peaks(filtered, kernel=KERNEL, stride=KERNEL), repeats)
        row["footprint_k50_s25"] = _time(lambda: footprint_peaks(filtered, kernel=KERNEL, stride=KERNEL // 2), repeats)
        row["footprint_loop_k50"] = _time(lambda: _footprint_loop(filtered, KERNEL), max(3, repeats // 2))
        row["cutouts_21"] = _time(lambda: cutouts(filtered, rows, cols, size=21), repeats)
        selector = FootprintSelector(kernel=KERNEL, stride=KERNEL)
        row["extract_candidates"] = _time(
            lambda: extract_candidates(images["dead_border"], sigma=SIGMA, selector=selector), max(3, repeats // 2))
        results["rows"].append(row)
    results["n_peaks"] = int(rows.size)
    return results


def _near_nan(image: np.ndarray) -> np.ndarray:
    """Pixels whose kernel sees a NaN: there the two filters differ by design."""
    return ndi.maximum_filter(~np.isfinite(image), size=2 * int(4 * SIGMA + 0.5) + 1)


def _table(results: dict) -> str:
    """Human-readable summary: milliseconds and speed-ups."""
    lines = [f"{SHAPE[0]}x{SHAPE[1]} float32, sigma={SIGMA}, kernel={KERNEL}, median of {results['repeats']} runs;"
             f" load average {results['load_average'][0]:.1f} on {results['cpu_count']} CPUs",
             f"{'step':34s} {'threads':>7s} {'wall ms':>9s} {'cpu ms':>9s} {'speed-up':>9s}"]
    for row in results["rows"]:
        def line(key: str, base: str | None = None) -> str:
            wall, cpu = row[key]
            ratio = f"{row[base][0] / wall:8.1f}x" if base else ""
            return f"{key:34s} {row['threads']:7d} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {ratio:>9s}"
        for name in ("few_nan", "dead_border"):
            lines.append(line(f"scipy_gaussian_{name}"))
            lines.append(line(f"gaussian_{name}", f"scipy_gaussian_{name}"))
        lines.append(line("gaussian_no_nan", "scipy_gaussian_few_nan"))
        lines.append(line("footprint_loop_k50"))
        lines.append(line("footprint_k50", "footprint_loop_k50"))
        lines.append(line("footprint_k50_s25"))
        lines.append(line("cutouts_21"))
        lines.append(line("extract_candidates"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "outputs/bench/candidates.json")
    args = parser.parse_args()
    results = run(args.repeats, args.threads)
    print(_table(results))
    save_json(args.out, results, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
