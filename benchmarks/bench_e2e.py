"""End-to-end detection speed on full 3080×3072 quadrants, per step and per inference variant, on 1 and 2 cores.

    python benchmarks/bench_e2e.py [--images 3] [--repeats 3] [--cores 1 2] [--artifact PATH|packaged]

The product path is timed: read a canonical npz quadrant → ``detect_image`` (mask, filter, select,
cutouts, assemble, stage 1, stage 2, accept, merge) → ``catalogue_rows``. Beside it each step is
timed alone with the same functions, with the peak resident memory it adds (``VmHWM`` reset through
``/proc/self/clear_refs`` before each step). Every inference variant is checked against plain fp32:
number of changed decisions and largest score difference. Each core count runs in its own
subprocess, pinned with ``taskset`` to that many CPUs when available, with ``torch.set_num_threads``
(the filter follows it). Figures are medians over ``--repeats`` passes over ``--images`` quadrants
after one warm-up. Writes ``outputs/bench/e2e.json``.

The cascade is ``--artifact`` (``packaged``: the one shipped in the package, neocascade), else the
newest ``outputs/**/cascade.pt`` whose both stages are FinalNet behind the footprint selector (the seed's
final cascade); without one, a fresh-initialised FinalNet cascade is written to a temporary folder:
the timing of a fixed architecture does not depend on its weights (only stage 2's share does, through
how many candidates stage 1 passes; with random weights the threshold is set to pass ~2 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3080, 3072)  # a ZTF CCD quadrant
STEPS = ("read", "mask_filter", "noise", "select", "cutouts", "assemble", "stage1", "stage2", "catalogue")
# (name, InferenceOptions fields, torch.backends.mkldnn enabled); "fp32_reference" is the check's reference
VARIANTS = {
    "fp32_reference": dict(precision="fp32", channels_last=False, batch_size=4096, recheck_margin=0.0),
    "fp32_channels_last_b256": dict(precision="fp32", channels_last=True, batch_size=256, recheck_margin=0.0),
    "bf16_b256": dict(precision="bf16", channels_last=False, batch_size=256),
    "default": {},  # InferenceOptions(): bf16 + channels_last + batch 256 + fp32 recheck near thresholds
}
STAGE_ONLY = {  # stage-1 inference alone on one quadrant's candidates: batch size, layout, precision
    "fp32_b256": dict(precision="fp32", channels_last=False, batch_size=256, recheck_margin=0.0),
    "fp32_b4096": dict(precision="fp32", channels_last=False, batch_size=4096, recheck_margin=0.0),
    **{f"fp32_channels_last_b{b}": dict(precision="fp32", channels_last=True, batch_size=b, recheck_margin=0.0)
       for b in (256, 1024, 4096)},
    **{f"bf16_channels_last_b{b}": dict(precision="bf16", channels_last=True, batch_size=b, recheck_margin=0.0)
       for b in (256, 1024, 4096)},
}


# ----------------------------------------------------------------------------- set-up (parent)
def find_artifact() -> Path | None:
    """Newest run's cascade.pt that is the seed's final cascade (FinalNet twice behind the footprint), or None."""
    from neocascade.training.artifact import load_cascade

    for path in sorted(ROOT.glob("outputs/**/cascade.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            cascade = load_cascade(path)
        except ValueError:
            continue
        selector = (cascade.input_spec.get("selector") or {}).get("kind")
        if cascade.stage1_arch == "final" and cascade.stage2_arch == "final" and cascade.cutout_size == 21 \
                and selector == "footprint":
            return path
    return None


def fresh_artifact(folder: Path) -> Path:
    """A seed-final cascade with fresh-initialised weights; thresholds pass ~2 % of real candidates."""
    from neocascade.models.final import FinalNet
    from neocascade.training.artifact import save_cascade, stage_record

    torch.manual_seed(0)
    nets = [FinalNet(1, 21).eval() for _ in range(2)]
    spec = {"sigma": 1.0, "kernel": 50, "stride": 50, "cutout_size": 21, "channels": ["filtered"], "normalize": "none",
            "selector": {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 50, "stride": 50,
                         "edge": "keep"}}
    x = torch.from_numpy(np.random.default_rng(0).normal(scale=6.0, size=(4096, 1, 21, 21)).astype(np.float32))
    with torch.no_grad():
        p = [torch.softmax(n(x), 1)[:, 1].numpy() for n in nets]
    t1, t2 = float(np.quantile(p[0], 0.98)), float(np.quantile(p[1], 0.5))
    return save_cascade(folder / "cascade.pt", stage1=stage_record(nets[0], t1), stage2=stage_record(nets[1], t2),
                        input_spec=spec, config={"note": "fresh-initialised weights, for timing only"}, metrics={})


def write_quadrants(folder: Path, n: int) -> tuple[Path, float]:
    """Simulate ``n`` demo-like quadrants into one canonical npz; returns the path and seconds per quadrant."""
    from neocascade.io.npz import write_canonical
    from neocascade.simulation import SimConfig, simulate_image

    config = SimConfig()
    start = time.perf_counter()
    pairs = [simulate_image(config, seed=2021, file_index=99, image_index=i) for i in range(n)]
    per_quadrant = (time.perf_counter() - start) / n
    path = write_canonical(folder / "quadrants.npz", np.stack([p[0] for p in pairs]),
                           np.concatenate([p[1] for p in pairs]), {"source": "bench_e2e", "seed": 2021})
    return path, per_quadrant


# ----------------------------------------------------------------------------- worker
def _hwm_kb() -> tuple[int, int]:
    """Current (VmRSS, VmHWM) in kB, or (0, 0) where /proc is missing."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class StepClock:
    """Wall time, and optionally peak added memory, of each named step."""

    def __init__(self, memory: bool) -> None:
        self.memory = memory and _reset_hwm()
        self.times: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.hwm_mb: dict[str, float] = {}

    def __call__(self, name: str, fn, *args):
        if self.memory:
            _reset_hwm()
            before = _hwm_kb()[0]
        start = time.perf_counter()
        out = fn(*args)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
        if self.memory:
            hwm = _hwm_kb()[1]
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), (hwm - before) / 1024)
            self.hwm_mb[name] = max(self.hwm_mb.get(name, 0.0), hwm / 1024)
        return out


def stepwise(data, index: int, cascade, spec, clock: StepClock, merge_radius: float = 5.0) -> np.ndarray:
    """The detection path split into its steps (same private functions as ``detect_image``); accepted mask."""
    from neocascade.candidates.cutouts import _cutouts
    from neocascade.detection.catalogue import catalogue_rows
    from neocascade.detection.detector import _assemble, _detections
    from neocascade.candidates.extract import Candidates
    from neocascade.evaluation.metrics import merge_detections
    from neocascade.preprocess.filters import _check_image, _gaussian_filter, _mask_invalid
    from neocascade.preprocess.noise import _robust_noise, _tile_noise

    box = spec.noise_box or 128
    image = clock("read", lambda: np.array(data.image(index), dtype=np.float32))

    def mask_filter():
        masked = _mask_invalid(_check_image(image), True)
        return masked, _gaussian_filter(masked, spec.sigma, 4.0)

    masked, filtered = clock("mask_filter", mask_filter)
    tiles, image_noise = clock("noise", lambda: (_tile_noise(filtered, box), _robust_noise(masked)))
    shares = getattr(spec.selector, "shares_noise_tiles", False) and spec.selector.noise_box == box
    rows, cols = clock("select", lambda: spec.selector(filtered, noise_tiles=tiles) if shares else spec.selector(filtered))

    def cut():
        c = np.empty((rows.size, 2, spec.cutout_size, spec.cutout_size), dtype=np.float32)
        c[:, 0] = _cutouts(filtered, rows, cols, spec.cutout_size, 0.0)
        c[:, 1] = _cutouts(masked, rows, cols, spec.cutout_size, 0.0)
        return Candidates(rows=np.asarray(rows), cols=np.asarray(cols), cutouts=c,
                          peak=filtered[rows, cols].astype(np.float32),
                          local_noise=tiles[rows // box, cols // box].astype(np.float32),
                          image_noise=image_noise, filtered=filtered)

    cand = clock("cutouts", cut)
    x = torch.from_numpy(np.ascontiguousarray(clock("assemble", _assemble, cand, spec)))
    opts = cascade.inference
    p1 = clock("stage1", lambda: cascade.stage1.proba(x, options=opts, threshold=cascade.threshold1))
    keep = p1 >= cascade.threshold1
    p2 = np.full(p1.shape, np.nan)
    if cascade.stage2 is None:  # a one-stage (gated) cascade passes stage 1's score on
        p2[keep] = clock("stage2", lambda: p1[keep])
    else:
        p2[keep] = clock("stage2", lambda: cascade.stage2.proba(x[torch.from_numpy(keep)], options=opts,
                                                              threshold=cascade.threshold2))

    def catalogue():
        accepted = np.flatnonzero(cascade.accept(p1, p2))
        score = np.where(np.isfinite(p2[accepted]), p2[accepted], p1[accepted])
        kept = accepted[merge_detections(cand.cols[accepted].astype(float), cand.rows[accepted].astype(float), score,
                                         radius=merge_radius)]
        return catalogue_rows(_detections(cand, kept, p1, p2), file="bench", image=index)

    clock("catalogue", catalogue)
    return cascade.accept(p1, p2)


def worker(args: argparse.Namespace) -> dict:
    """Run every measurement with ``args.threads`` threads; a JSON-ready dict."""
    torch.set_num_threads(args.threads)
    from neocascade.detection.catalogue import catalogue_rows
    from neocascade.detection.detector import _assemble, _extract, detect_image, input_spec
    from neocascade.io.npz import read_canonical
    from neocascade.training.artifact import InferenceOptions, load_cascade

    cascade = load_cascade(args.artifact)
    spec = input_spec(cascade)
    data = read_canonical(args.data)
    n_images = data.n_images
    if args.part == "compile":
        x = torch.from_numpy(np.ascontiguousarray(_assemble(_extract(np.asarray(data.image(0)), spec, spec.selector), spec)))
        return _compile_variant(cascade, x, args.repeats)
    out: dict = {"threads": args.threads, "affinity": sorted(os.sched_getaffinity(0)), "variants": {},
                 "load_average_start": list(os.getloadavg())}

    # candidates of every image, for the decision checks and the stage-only sweep
    inputs = []
    for i in range(n_images):
        cand = _extract(np.asarray(data.image(i)), spec, spec.selector)
        inputs.append(torch.from_numpy(np.ascontiguousarray(_assemble(cand, spec))))
    out["candidates_per_quadrant"] = float(np.mean([len(x) for x in inputs]))

    reference = None
    for name, fields in VARIANTS.items():
        cascade.set_inference(InferenceOptions(**fields))
        scores = [cascade.score(x) for x in inputs]
        decisions = np.concatenate([cascade.accept(*s) for s in scores])
        p1 = np.concatenate([s[0] for s in scores])
        p2 = np.concatenate([s[1] for s in scores])
        if reference is None:
            reference = (decisions, p1, p2)
        both = np.isfinite(p2) & np.isfinite(reference[2])

        def e2e(i: int) -> None:
            det = detect_image(np.asarray(data.image(i)), cascade, spec=spec)
            catalogue_rows(det, file=str(args.data), image=i)

        e2e(0)  # warm-up: lazy layouts, oneDNN primitive caches
        times, cpu = [], []
        for _ in range(args.repeats):
            start, cpu0 = time.perf_counter(), time.process_time()
            for i in range(n_images):
                e2e(i)
            times.append((time.perf_counter() - start) / n_images)
            cpu.append((time.process_time() - cpu0) / n_images)
        per_q = float(np.median(times))
        out["variants"][name] = {
            "options": {k: v for k, v in vars(cascade.inference).items()},
            "resolved_precision": cascade.inference.resolved_precision(torch.device("cpu")),
            "seconds_per_quadrant": per_q,
            "seconds_all": times,
            "cpu_seconds_per_quadrant": float(np.median(cpu)),
            "quadrants_per_s_best": 1.0 / min(times),
            "quadrants_per_s": 1.0 / per_q,
            "decisions_changed_vs_fp32": int((decisions != reference[0]).sum()),
            "accepted": int(decisions.sum()),
            "stage1_passed": int(np.isfinite(p2).sum()),
            "max_abs_dp1_vs_fp32": float(np.abs(p1 - reference[1]).max()),
            "max_abs_dp2_vs_fp32": float(np.abs(p2[both] - reference[2][both]).max()) if both.any() else 0.0,
        }
        print(f"  [{args.threads} core] {name:28s} {per_q:6.3f} s/quadrant  "
              f"changed={out['variants'][name]['decisions_changed_vs_fp32']}", flush=True)

    # step breakdown (time over repeats, peak memory on the last pass) for the default and the fp32 reference
    out["steps"] = {}
    for name in ("default", "fp32_reference"):
        cascade.set_inference(InferenceOptions(**VARIANTS[name]))
        stepwise(data, 0, cascade, spec, StepClock(memory=False))
        runs = []
        for r in range(args.repeats):
            clock = StepClock(memory=r == args.repeats - 1)
            for i in range(n_images):
                stepwise(data, i, cascade, spec, clock)
            runs.append(clock)
        out["steps"][name] = {
            "seconds": {s: float(np.median([c.times[s] / n_images for c in runs])) for s in STEPS},
            "peak_added_mb": runs[-1].peak_mb,
            "peak_rss_mb": runs[-1].hwm_mb,
        }
    out["rss_mb_end"] = _hwm_kb()[0] / 1024

    # stage-1 inference alone on one quadrant's candidates: batch sizes, layouts, precisions, oneDNN off
    x = inputs[0]
    sweep = {}
    for name, fields in STAGE_ONLY.items():
        opts = InferenceOptions(**fields)
        sweep[name] = _time_stage(cascade, x, opts, args.repeats)
    with torch.backends.mkldnn.flags(enabled=False):
        sweep["fp32_channels_last_mkldnn_off_b256"] = _time_stage(
            cascade, x, InferenceOptions(**STAGE_ONLY["fp32_channels_last_b256"]), args.repeats)
    out["stage1_only"] = {k: {"seconds": v, "samples_per_s": len(x) / v} for k, v in sweep.items()}
    out["load_average_end"] = list(os.getloadavg())
    return out


def _time_stage(cascade, x: torch.Tensor, opts, repeats: int) -> float:
    """Median seconds of stage-1 scoring of ``x`` with ``opts`` after one warm-up."""
    cascade.stage1.proba(x, options=opts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cascade.stage1.proba(x, options=opts)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _compile_variant(cascade, x: torch.Tensor, repeats: int) -> dict:
    """``torch.compile`` of stage 1 (fp32 and bf16 channels-last): compile seconds apart from steady speed."""
    from neocascade.training.artifact import InferenceOptions

    results = {}
    for precision in ("fp32", "bf16"):
        opts = InferenceOptions(precision=precision, channels_last=True, batch_size=256, recheck_margin=0.0, compile=True)
        name = f"{precision}_channels_last_b256_compiled"
        try:
            start = time.perf_counter()
            cascade.stage1.proba(x, options=opts)  # compiles for the full batch and the remainder
            compile_s = time.perf_counter() - start
            seconds = _time_stage(cascade, x, opts, repeats)
            results[name] = {"seconds": seconds, "samples_per_s": len(x) / seconds, "compile_s": compile_s}
        except Exception as exc:  # inductor needs a C++ toolchain; any failure only skips this row
            results[name] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        print(f"  compile {name}: {results[name]}", flush=True)
    return results


# ----------------------------------------------------------------------------- parent
def _run_compile(cmd: list[str], env: dict, timeout: float) -> dict:
    """The torch.compile rows in their own process, given up after ``timeout`` seconds."""
    print(f"==> torch.compile (at most {timeout:.0f} s)", flush=True)
    try:
        proc = subprocess.run([*cmd, "--part", "compile"], capture_output=True, text=True, env=env, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"compiled": {"skipped": f"compilation took over {timeout:.0f} s"}}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"compiled": {"skipped": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}}
    return json.loads(proc.stdout.splitlines()[-1])


def _pinned(threads: int) -> list[str]:
    """``taskset -c 0..n-1`` when available and the machine has that many CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") and len(cpus) >= threads:
        return ["taskset", "-c", ",".join(map(str, cpus[:threads]))]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="quadrants per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--artifact", default=None,
                        help="a cascade.pt, or 'packaged' for the cascade shipped in the package (default: the seed's)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench/e2e.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("main", "compile"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--compile-timeout", type=float, default=240.0, help="seconds allowed for the compile rows")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    from neocascade.training.artifact import load_cascade, native_bf16
    from neocascade.utils.atomic import save_json

    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        tmp = Path(tmp)
        if args.artifact == "packaged":
            from neocascade.training.artifact import PACKAGED

            args.artifact = PACKAGED
        artifact = Path(args.artifact) if args.artifact else find_artifact()
        weights = "trained" if artifact is not None else "fresh-initialised (timing only)"
        if artifact is None:
            artifact = fresh_artifact(tmp)
        cascade = load_cascade(artifact)
        data, sim_s = write_quadrants(tmp, args.images)
        print(f"cascade {artifact} ({weights}); {args.images} quadrants simulated ({sim_s:.2f} s each)", flush=True)
        result = {
            "shape": list(SHAPE), "images": args.images, "repeats": args.repeats,
            "artifact": str(artifact), "weights": weights,
            "stages": [cascade.stage1_arch, cascade.stage2_arch], "thresholds": [cascade.threshold1, cascade.threshold2],
            "input_spec": cascade.input_spec, "default_inference": vars(cascade.inference),
            "native_bf16": native_bf16(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "load_average_start": list(os.getloadavg()),
            "simulate_s_per_quadrant_while_preparing": sim_s, "cores": {},
        }
        for n in args.cores:
            cmd = [*_pinned(n), sys.executable, __file__, "--worker", "--threads", str(n), "--data", str(data),
                   "--artifact", str(artifact), "--repeats", str(args.repeats)]
            env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
            print(f"==> {n} core(s): {' '.join(cmd[:4])} ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines()[:-1]))
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                return 1
            result["cores"][str(n)] = json.loads(proc.stdout.splitlines()[-1])
            if args.compile and n == max(args.cores):
                result["cores"][str(n)]["stage1_only"].update(_run_compile(cmd, env, args.compile_timeout))
        result["load_average_end"] = list(os.getloadavg())
    save_json(args.out, result, overwrite=True)
    for n, res in result["cores"].items():
        steps = res["steps"]["default"]["seconds"]
        limit = max(steps, key=steps.get)
        print(f"{n} core(s): default {res['variants']['default']['quadrants_per_s']:.2f} quadrants/s, "
              f"fp32 {res['variants']['fp32_reference']['quadrants_per_s']:.2f}; slowest step {limit} ({steps[limit]:.3f} s)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
