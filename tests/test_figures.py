"""Figures render to PNG with labelled axes; t-SNE + k-means separates two obvious blobs."""

from __future__ import annotations

import io

import numpy as np
import pytest

from neocascade.evaluation import figures as F
from neocascade.evaluation.completeness import logistic
from neocascade.evaluation.tsne import cluster_accuracy, tsne_kmeans

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    data = buf.getvalue()
    assert data.startswith(PNG_MAGIC)
    return data


def _labels(fig) -> tuple[str, str, str]:
    ax = fig.axes[0]
    return ax.get_xlabel(), ax.get_ylabel(), ax.get_title()


@pytest.fixture(scope="module")
def asteroids():
    rng = np.random.default_rng(0)
    mags = rng.uniform(18, 21.5, 600)
    found = rng.random(600) < logistic(mags, m50=20.0, width=0.25, plateau=0.95)
    lengths = rng.uniform(0, 40, 600)
    return mags, found, lengths


def test_completeness_figures(asteroids):
    mags, found, lengths = asteroids
    fig = F.completeness_vs_magnitude(mags, found, reference={"proposed": found | (mags < 20.5)})
    _png(fig)
    x, y, title = _labels(fig)
    assert x == "magnitude [mag]" and "completeness" in y and title
    assert any("m50" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    fig = F.completeness_vs_length(lengths, found)
    _png(fig)
    assert _labels(fig)[0] == "trail length [px]"
    reasons = np.where(found, -1, (mags * 10).astype(int) % 5)
    fig = F.miss_rate_vs_magnitude(mags, found, reasons=reasons)
    _png(fig)
    assert "false-negative rate" in _labels(fig)[1]


def test_footprint_figures(asteroids):
    mags, found, _ = asteroids
    fig = F.footprint_vs_kernel([10, 30, 50, 70], np.array([90, 80, 70, 50]), np.array([100] * 4),
                                candidates_per_image=np.array([1e5, 1e4, 4e3, 2e3]))
    _png(fig)
    assert _labels(fig)[0] == "footprint kernel size [px]"
    assert fig.axes[1].get_ylabel() == "candidates per image"
    fig = F.footprint_vs_magnitude(mags, {30: found, 50: found & (mags < 20)})
    _png(fig)
    assert _labels(fig)[1] == "fraction of asteroids proposed"


def test_pr_and_confusion():
    r = np.linspace(0, 1, 50)
    fig = F.pr_figure({"cascade": (1 - 0.3 * r**4, r)}, points={"threshold 0.5": (0.9, 0.8)}, target_precision=0.98)
    _png(fig)
    assert _labels(fig)[:2] == ("recall (candidate level)", "precision (candidate level)")
    fig = F.confusion_figure(np.array([[50, 3], [2, 45]]))
    _png(fig)
    assert _labels(fig)[:2] == ("predicted class", "true class")
    assert fig.axes[-1].get_ylabel() == "candidates"  # colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(texts[::2]) == ["2", "3", "45", "50"]
    assert texts[1] == "(94.3%)"  # 50 of the 53 negatives


def test_cutout_grid_and_boxplots():
    rng = np.random.default_rng(1)
    stamps = rng.normal(size=(10, 21, 21)).astype(np.float32)
    stamps[:, 10, 10] += 20
    fig = F.cutout_grid(stamps, captions=[f"p={i / 10:.1f}" for i in range(10)], ncols=4, title="positives")
    _png(fig)
    assert fig.axes[-1].get_ylabel() == "pixel value [DN]"  # the colour bar
    assert fig.axes[0].get_title() == "p=0.0"
    fig = F.pixel_boxplots({"all pixels": rng.normal(size=1000), "asteroid centres": rng.normal(30, 5, 50)})
    _png(fig)
    assert _labels(fig)[1] == "pixel value [DN]"
    with pytest.raises(ValueError, match="cutouts"):
        F.cutout_grid(np.zeros((21, 21)))


def test_tsne_separates_blobs_and_figure():
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(2)
    neg = rng.normal(0, 0.1, size=(30, 5, 5))
    pos = rng.normal(0, 0.1, size=(30, 5, 5)) + 5.0
    cutouts = np.concatenate([neg, pos])
    labels = np.r_[np.zeros(30), np.ones(30)].astype(bool)
    with threadpool_limits(1):  # one thread: deterministic and fast on a busy machine
        res = tsne_kmeans(cutouts, labels, n=50, seed=0, perplexity=10, max_iter=3000)
        shuffled = tsne_kmeans(cutouts, rng.permutation(labels), n=50, seed=0, perplexity=10, max_iter=3000)
    assert res.embedding.shape == (50, 3) and res.index.size == 50 and np.all(np.diff(res.index) > 0)
    # t-SNE spreads each isotropic blob into a shell, so k-means is good but not always perfect
    assert res.accuracy >= 0.85
    assert shuffled.accuracy < 0.75  # labels unrelated to the pixels: near chance (0.5)
    fig = F.tsne_figure(res.embedding, labels[res.index], res.clusters, accuracy=res.accuracy)
    _png(fig)
    assert fig.axes[0].get_zlabel() == "t-SNE 3 [arb.]"


def test_cluster_accuracy_uses_best_assignment():
    assert cluster_accuracy(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == 1.0
    assert cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == 0.5


# ---------------------------------------------------------------- the report folder
def test_write_report_is_atomic_and_refuses_overwrite(tmp_path):
    import json

    from neocascade.errors import InputError
    from neocascade.evaluation.report import render_markdown, write_report

    rep = {"negative": {"precision": 0.9, "recall": 1.0, "f1": 0.95, "support": 9},
           "positive": {"precision": float("nan"), "recall": 0.0, "f1": float("nan"), "support": 1},
           "accuracy": 0.9, "n": 10, "confusion": [[9, 0], [1, 0]]}
    e2e = {"completeness": 0.5, "completeness_visible": 0.6, "purity": 1.0, "false_per_quadrant": 0.0,
           "duplicates": 0, "found": 1, "injected": 2, "detections": 1, "missed": 1,
           "misses": {"dead": 1, "not_proposed": 0, "stage1_rejected": 0, "stage2_rejected": 0, "other": 0}}
    results = {"title": "T", "summary": [("artifact", "a.pt")], "candidate": {"cascade": rep},
               "end_to_end": {"target": e2e}, "m50": {"m50": 20.1, "m50_err": 0.05}}
    fig = F.confusion_figure(np.array(rep["confusion"]))
    md = render_markdown(results, figures=["confusion"])
    assert "| cascade | positive | – | 0.0000 |" in md
    assert "| target | 1 | 0 | 0 | 0 | 0 | 1 |" in md
    out = write_report(tmp_path / "eval" / "run1", markdown=md, metrics={"x": float("nan"), "a": np.arange(2)},
                       figures={"confusion": fig})
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "report.md"]
    assert json.loads((out / "metrics.json").read_text()) == {"x": None, "a": [0, 1]}
    assert (out / "confusion.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(InputError, match="run1: report folder already exists"):
        write_report(out, markdown="new", metrics={})
    write_report(out, markdown="new", metrics={}, overwrite=True)
    assert (out / "report.md").read_text() == "new"
    assert not (out / "confusion.png").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["run1"]  # no temporary folders left
