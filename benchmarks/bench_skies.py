"""Detection speed of the shipped detector on other skies: a crowded field, long trails, with and without trails.

    python benchmarks/bench_skies.py [--skies paper held_crowded long_trails] [--images 2] [--repeats 3]

For each preset (``conf/data/<sky>.yaml``) ``--images`` full quadrants are simulated once; then, with
``--threads`` torch threads, each pass times ``detect_image`` with the shipped cascade and detect.py's default
residual and reference checks (the catalogue: the simulator's stars behind each image's residuals), alone, and followed by the trail detector (``conf/trails/default.yaml``) and the merge of point
detections lying on a trail, as ``detect.py trails=default`` does. Figures are medians over ``--repeats`` passes after one warm-up,
with the candidates per quadrant. Writes ``outputs/bench/skies.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"paper": 2.0, "held_crowded": 1.0, "long_trails": None}  # quadrants/s on 2 cores (issues 13, 15)


def sky_images(sky: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` quadrants of the preset ``sky`` (its first file), as the simulator makes them, each with its reference
    catalogue (x, y, magnitude)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from neocascade.simulation.config import SimConfig
    from neocascade.simulation.quadrant import reference_stars, simulate_image

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("trails_eval", overrides=[f"data={sky}"])
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    config = SimConfig(**(source.get("sim") or {}), shape=tuple(source["shape"]), n_asteroids=int(source["n_asteroids"]))
    where = [dict(seed=int(source["seed"]), file_index=0, image_index=i) for i in range(n)]
    return [(simulate_image(config, **w)[0], reference_stars(config, **w)) for w in where]


def time_sky(skies: list[tuple[np.ndarray, np.ndarray]], repeats: int) -> dict:
    """Median seconds per quadrant of the cascade alone and with the trail detector, and candidates per quadrant."""
    from hydra import compose, initialize_config_dir

    from neocascade.detection.detector import _extract, detect_image, input_spec
    from neocascade.detection.reference import build_star_check
    from neocascade.detection.residuals import build_residual_check
    from neocascade.detection.trails import build_trail_detector
    from neocascade.training.artifact import PACKAGED, load_cascade

    cascade = load_cascade(PACKAGED)
    spec = input_spec(cascade)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        detector = build_trail_detector(compose("trails_eval").trails)
        check = build_residual_check(compose("detect").get("residual_check"))  # detect.py's defaults
        star_check = build_star_check(compose("detect").get("reference_check"))

    def points(image: np.ndarray, stars: np.ndarray) -> dict:
        reference = None if star_check is None else star_check.bind(stars)
        return detect_image(image, cascade, spec=spec, check=check, reference=reference)

    def with_trails(image: np.ndarray, stars: np.ndarray) -> None:
        det = points(image, stars)
        found = detector(image, exptime=30.0)
        detector.on_trail(det["x"], det["y"], found)

    out = {}
    for name, fn in (("cascade", points), ("cascade_and_trails", with_trails)):
        for image, stars in skies[:1]:
            fn(image, stars)  # warm-up
        passes = []
        for _ in range(repeats):
            start = time.perf_counter()
            for image, stars in skies:
                fn(image, stars)
            passes.append((time.perf_counter() - start) / len(skies))
        per_q = statistics.median(passes)
        out[name] = {"seconds_per_quadrant": per_q, "quadrants_per_s": 1.0 / per_q, "passes": passes}
    out["candidates_per_quadrant"] = float(np.mean([len(_extract(im, spec, spec.selector).rows) for im, _ in skies]))
    out["reference_check"] = repr(star_check) if star_check is not None else None
    out["trail_cost_over_cascade"] = (out["cascade_and_trails"]["seconds_per_quadrant"]
                                      / out["cascade"]["seconds_per_quadrant"] - 1.0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skies", nargs="+", default=list(TARGETS))
    parser.add_argument("--images", type=int, default=2, help="quadrants per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench/skies.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from neocascade.utils.atomic import save_json

    torch.set_num_threads(args.threads)
    result = {"images": args.images, "repeats": args.repeats, "threads": args.threads,
              "load_average_start": list(os.getloadavg()), "targets_quadrants_per_s": TARGETS, "skies": {}}
    for sky in args.skies:
        images = sky_images(sky, args.images)
        result["skies"][sky] = row = time_sky(images, args.repeats)
        print(f"{sky:14s} cascade {row['cascade']['quadrants_per_s']:.2f} q/s, with trails "
              f"{row['cascade_and_trails']['quadrants_per_s']:.2f} q/s (trails +{100 * row['trail_cost_over_cascade']:.0f} %), "
              f"{row['candidates_per_quadrant']:.0f} candidates/quadrant", flush=True)
    result["load_average_end"] = list(os.getloadavg())
    save_json(args.out, result, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
