"""Training speed per model: Lightning (CutoutClassifier) vs a plain torch loop, and the random forest's fit.

    .venv/bin/python benchmarks/bench_training.py            # -> outputs/bench/training.json

Random 21×21 single-channel cutouts (positives get a bright centre pixel), batch 256, a fixed number of
batches per run, median of ``--runs`` runs, ``torch.set_num_threads(--threads)``. The Lightning side is a
whole ``Trainer.fit`` (logger, checkpointing and progress bar off) with a fresh model each run, so its
time includes Trainer set-up and the epoch-end metrics; ``steady`` figures leave out the first batch on
both sides, separating fixed set-up cost from per-batch cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
CNN_NAMES = ("baseline", "vgg", "final")
DEFAULT_BATCHES = {"baseline": 12, "vgg": 4, "final": 12}  # ~10-30 s per run on 2 CPU threads


def _data(n: int, *, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, size // 2, size // 2] += 3.0
    return x, y


def _model(name: str, *, size: int) -> torch.nn.Module:
    cfg = OmegaConf.create({"seed": 0, "model": OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")})
    return instantiate(cfg.model, in_channels=1, cutout_size=size)


def _optimizer() -> functools.partial:
    cfg = OmegaConf.load(ROOT / "conf" / "optimizer" / "adam.yaml")
    return instantiate(cfg)


class _BatchClock:
    """Lightning callback: time from the start of batch 1 to the end of the last batch."""

    def __new__(cls):
        import pytorch_lightning as pl

        class Clock(pl.Callback):
            def __init__(self) -> None:
                self.start = self.end = None

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if batch_idx == 1:
                    self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                self.end = time.perf_counter()

        return Clock()


def _run_lightning(name: str, loader: DataLoader, *, size: int) -> tuple[float, float]:
    import pytorch_lightning as pl

    from neocascade.training.classifier import CutoutClassifier

    module = CutoutClassifier(_model(name, size=size), _optimizer(), example_grids=False)
    clock = _BatchClock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    total = time.perf_counter() - start
    return total, clock.end - clock.start


def _run_plain(name: str, loader: DataLoader, *, size: int) -> tuple[float, float]:
    model = _model(name, size=size).train()
    optimizer = _optimizer()(model.parameters())
    start = time.perf_counter()
    steady_start = None
    for i, (x, y) in enumerate(loader):
        if i == 1:
            steady_start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    end = time.perf_counter()
    return end - start, end - steady_start


def bench_cnns(names, *, batches: dict[str, int], batch_size: int, runs: int, size: int) -> dict:
    results = {}
    for name in names:
        n_batches = batches[name]
        x, y = _data(n_batches * batch_size, size=size, seed=0)
        plain_loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
        pl_loader = DataLoader(TensorDataset(x, y, torch.arange(x.shape[0])), batch_size=batch_size)
        plain, light = [], []
        for run in range(runs):
            # alternate the order, so a slow phase of a shared machine does not always hit the same side
            for side in (("plain", "lightning") if run % 2 == 0 else ("lightning", "plain")):
                if side == "plain":
                    plain.append(_run_plain(name, plain_loader, size=size))
                else:
                    light.append(_run_lightning(name, pl_loader, size=size))
        t_plain, t_light = (statistics.median(t for t, _ in r) for r in (plain, light))
        s_plain, s_light = (statistics.median(s for _, s in r) for r in (plain, light))
        samples, steady_samples = n_batches * batch_size, (n_batches - 1) * batch_size
        results[name] = {
            "parameters": sum(p.numel() for p in _model(name, size=size).parameters()),
            "batches": n_batches,
            "plain_samples_per_s": round(samples / t_plain, 1),
            "lightning_samples_per_s": round(samples / t_light, 1),
            "lightning_overhead_pct": round(100 * (t_light / t_plain - 1), 1),
            "plain_steady_samples_per_s": round(steady_samples / s_plain, 1),
            "lightning_steady_samples_per_s": round(steady_samples / s_light, 1),
            "lightning_steady_overhead_pct": round(100 * (s_light / s_plain - 1), 1),
            "plain_s": [round(t, 3) for t, _ in plain],
            "lightning_s": [round(t, 3) for t, _ in light],
            "load_average_after": round(os.getloadavg()[0], 2),
        }
        logging.info("%s: %s", name, results[name])
    return results


def bench_forest(*, n: int, size: int, runs: int, n_jobs: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    from neocascade.models.forest import ArrayForest, forest_to_arrays

    x, y = (t.numpy() for t in _data(n, size=size, seed=1))
    flat = x.reshape(n, -1)
    fits = []
    for _ in range(runs):
        # what RandomForestStage.fit does, kept apart so one fit serves both prediction timings
        start = time.perf_counter()
        fitted = RandomForestClassifier(n_estimators=100, n_jobs=n_jobs, random_state=0).fit(flat, y)
        forest = ArrayForest(forest_to_arrays(fitted))
        fits.append(time.perf_counter() - start)
    test_x = _data(n, size=size, seed=2)[0].numpy().reshape(n, -1)
    start = time.perf_counter()
    ours = forest.predict_proba(test_x)[:, 1]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = fitted.predict_proba(test_x)[:, 1]
    t_sklearn = time.perf_counter() - start
    return {
        "n_samples": n,
        "n_features": int(x[0].size),
        "n_estimators": 100,
        "n_jobs": n_jobs,
        "fit_s_median": round(statistics.median(fits), 2),
        "fit_s": [round(t, 2) for t in fits],
        "max_depth_grown": forest.max_depth,
        "array_forest_predict_s": round(t_ours, 3),
        "sklearn_predict_s": round(t_sklearn, 3),
        "max_abs_diff_vs_sklearn": float(np.abs(ours - theirs).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(CNN_NAMES), choices=CNN_NAMES)
    parser.add_argument("--batches", type=int, default=None, help="training batches per run (default: per model)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=21)
    parser.add_argument("--rf-samples", type=int, default=20_000)
    parser.add_argument("--rf-runs", type=int, default=1)
    parser.add_argument("--no-rf", action="store_true")
    parser.add_argument("--merge", action="store_true", help="update an existing report instead of replacing it")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "training.json")
    args = parser.parse_args(argv)

    from neocascade.utils.atomic import save_json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {
        "setup": {
            "threads": args.threads,
            "batch_size": args.batch_size,
            "runs": args.runs,
            "cutout_size": args.size,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor() or platform.platform(),
        },
    }
    batches = {name: args.batches or DEFAULT_BATCHES[name] for name in args.models}
    cnn = bench_cnns(args.models, batches=batches, batch_size=args.batch_size, runs=args.runs, size=args.size)
    if args.merge and args.out.is_file():
        previous = json.loads(args.out.read_text())
        report = {**previous, "setup": report["setup"], "cnn": {**previous.get("cnn", {}), **cnn}}
    else:
        report["cnn"] = cnn
    save_json(args.out, report, overwrite=True)  # keep the CNN figures even if the forest part is interrupted
    if not args.no_rf:
        report["rf"] = bench_forest(n=args.rf_samples, size=args.size, runs=args.rf_runs, n_jobs=args.threads)
    save_json(args.out, report, overwrite=True)
    logging.info("wrote %s", args.out)
    return report


if __name__ == "__main__":
    main()
