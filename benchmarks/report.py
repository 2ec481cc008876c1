"""Merge outputs/bench/*.json into outputs/bench/bench.json, docs/benchmarks.md and docs/bench.png.

    python benchmarks/report.py

Missing parts (a benchmark that was not run) are left out of the report with a note.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neocascade.pipelines.common import marked_sections, replace_section  # noqa: E402
from neocascade.utils.atomic import atomic_path, save_json, save_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "outputs" / "bench"
DOCS = ROOT / "docs"
PARTS = ("e2e", "e2e_neocascade", "skies", "selectors", "candidates", "simulator", "training")
TARGET_QPS = 0.5  # the benchmark issue's target: the seed's cascade at >= 0.5 quadrants/s on 2 cores
TARGET_QPS_NEOCASCADE = 1.6  # beyond the seed: 64 ZTF quadrants every ~40 s, on 2 cores


def _load() -> dict:
    parts = {}
    for name in PARTS:
        path = BENCH / f"{name}.json"
        if path.is_file():
            parts[name] = json.loads(path.read_text())
    return parts


def merge(parts: dict) -> dict:
    """The machine-readable summary: step keys, ``quadrants_per_s_e2e`` and the reference ratios."""
    out: dict = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_now": list(os.getloadavg()),
                 "target_quadrants_per_s": TARGET_QPS, "missing": [p for p in PARTS if p not in parts]}
    e2e = parts.get("e2e")
    if e2e:
        cores = e2e["cores"]
        top = str(max(int(c) for c in cores))
        default = cores[top]["steps"]["default"]
        out.update(default["seconds"])  # one key per step, named by bench_e2e.py
        out["peak_added_mb"] = default["peak_added_mb"]
        out["peak_rss_mb"] = default.get("peak_rss_mb", {})
        out["quadrants_per_s_e2e"] = cores[top]["variants"]["default"]["quadrants_per_s"]
        out["quadrants_per_s_e2e_cores"] = int(top)
        out["quadrants_per_s_e2e_by_cores"] = {c: {v: r["quadrants_per_s"] for v, r in res["variants"].items()}
                                               for c, res in cores.items()}
        out["decisions_changed_vs_fp32"] = {c: {v: r["decisions_changed_vs_fp32"] for v, r in res["variants"].items()}
                                            for c, res in cores.items()}
        out["limiting_step"] = max(default["seconds"], key=default["seconds"].get)
        out["meets_target"] = out["quadrants_per_s_e2e"] >= TARGET_QPS
        out["stage1_samples_per_s"] = {c: {v: r.get("samples_per_s") for v, r in res["stage1_only"].items()}
                                       for c, res in cores.items()}
        out["e2e_weights"] = e2e["weights"]
        out["load_average_e2e"] = [e2e["load_average_start"], e2e["load_average_end"]]
    neo = parts.get("e2e_neocascade")
    if neo:
        top = str(max(int(c) for c in neo["cores"]))
        steps = neo["cores"][top]["steps"]["default"]["seconds"]
        qps = neo["cores"][top]["variants"]["default"]["quadrants_per_s"]
        out["neocascade"] = {"artifact": neo["artifact"], "quadrants_per_s_e2e": qps, "cores": int(top),
                             "target_quadrants_per_s": TARGET_QPS_NEOCASCADE, "meets_target": qps >= TARGET_QPS_NEOCASCADE,
                             "seconds": steps, "limiting_step": max(steps, key=steps.get),
                             "candidates_per_quadrant": neo["cores"][top]["candidates_per_quadrant"]}
    skies = parts.get("skies")
    if skies:
        out["skies"] = {sky: {"quadrants_per_s": r["cascade"]["quadrants_per_s"],
                              "quadrants_per_s_with_trails": r["cascade_and_trails"]["quadrants_per_s"],
                              "target_quadrants_per_s": skies["targets_quadrants_per_s"].get(sky),
                              "candidates_per_quadrant": r["candidates_per_quadrant"]}
                        for sky, r in skies["skies"].items()}
    cand = parts.get("candidates")
    if cand:
        ratios = {}
        for row in cand["rows"]:
            n = row["threads"]
            ratios[f"gaussian_speedup_vs_scipy_{n}t"] = row["scipy_gaussian_few_nan"][0] / row["gaussian_few_nan"][0]
            ratios[f"footprint_speedup_vs_loop_{n}t"] = row["footprint_loop_k50"][0] / row["footprint_k50"][0]
        out["ratios"] = ratios
    sel = parts.get("selectors")
    if sel:
        out.setdefault("ratios", {})
        if "sep_over_local_maxima_time" in sel:
            out["ratios"]["sep_time_over_local_maxima_time"] = sel["sep_over_local_maxima_time"]
        out["selectors"] = sel["selectors"]
    if parts.get("simulator"):
        out["simulator_s_per_quadrant"] = parts["simulator"]["seconds_median"]
    if parts.get("training"):
        tr = parts["training"]
        out["training_samples_per_s"] = {m: {"plain": r["plain_samples_per_s"], "lightning": r["lightning_samples_per_s"]}
                                         for m, r in tr.get("cnn", {}).items()}
        if "rf" in tr:
            out["training_rf_fit_s"] = tr["rf"]["fit_s_median"]
            out["training_rf_samples"] = tr["rf"]["n_samples"]
    out["parts"] = parts
    return out


def _f(value, fmt: str = ".3f") -> str:
    return "–" if value is None else format(value, fmt)


def _e2e_lines(e2e: dict, *, title: str, target: float) -> list[str]:
    """The markdown of one end-to-end part (a cascade timed by bench_e2e.py)."""
    top = str(max(int(c) for c in e2e["cores"]))
    default = e2e["cores"][top]["steps"]["default"]["seconds"]
    qps = e2e["cores"][top]["variants"]["default"]["quadrants_per_s"]
    limit = max(default, key=default.get)
    lines = []
    lines += [f"## {title}", "",
              f"Cascade `{Path(e2e['artifact']).name}` ({e2e['weights']} weights; stages {e2e['stages']}, "
              f"thresholds {[round(t, 3) for t in e2e['thresholds']]}), {e2e['images']} full {e2e['shape'][0]}×"
              f"{e2e['shape'][1]} quadrants read from a canonical npz, {e2e['repeats']} passes after a warm-up; "
              f"native bf16 on this CPU: {e2e['native_bf16']}; load average "
              f"{e2e['load_average_start'][0]:.1f} → {e2e['load_average_end'][0]:.1f} on {e2e['cpu_count']} CPUs.", "",
              f"**{qps:.2f} quadrants/s on {top} cores with the default inference "
              f"(target ≥ {target}: {'met' if qps >= target else 'not met'}); the slowest step is "
              f"`{limit}`.**", "",
              "| variant | " + " | ".join(f"{c} core q/s (best) | s/quadrant | CPU s" for c in e2e["cores"])
              + " | decisions changed vs fp32 | max ΔP1 |",
              "|---|" + "---|---|---|" * len(e2e["cores"]) + "---|---|"]
    for v in next(iter(e2e["cores"].values()))["variants"]:
        cells = []
        for res in e2e["cores"].values():
            r = res["variants"][v]
            cells.append(f"{r['quadrants_per_s']:.2f} ({r.get('quadrants_per_s_best', float('nan')):.2f}) | "
                         f"{r['seconds_per_quadrant']:.2f} | {_f(r.get('cpu_seconds_per_quadrant'), '.2f')}")
        r = e2e["cores"][top]["variants"][v]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {r['decisions_changed_vs_fp32']} | "
                     f"{r['max_abs_dp1_vs_fp32']:.1e} |")
    default_opts = ", ".join(f"{k}={v}" for k, v in e2e["default_inference"].items())
    lines += ["", f"`default` = `InferenceOptions()` ({default_opts}): bf16 autocast where the CPU has native bf16, "
              "NHWC layout, scores within `recheck_margin` of a threshold recomputed in fp32, so decisions equal "
              "fp32's (tested in `tests/test_inference_variants.py`: |ΔP| ≤ 1e-2, identical decisions).", "",
              "### Time and peak memory of each step (default inference)", "",
              "| step | " + " | ".join(f"{c} core s" for c in e2e["cores"]) + " | fp32 reference s ("
              + top + " cores) | peak added MB | peak RSS MB |", "|---|" + "---|" * (len(e2e["cores"]) + 3)]
    for s in default:  # the steps as bench_e2e.py named them
        cells = [f"{res['steps']['default']['seconds'][s]:.3f}" for res in e2e["cores"].values()]
        ref = e2e["cores"][top]["steps"]["fp32_reference"]["seconds"][s]
        d = e2e["cores"][top]["steps"]["default"]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {ref:.3f} | {d['peak_added_mb'].get(s, 0):.0f} | "
                     f"{d.get('peak_rss_mb', {}).get(s, 0):.0f} |")
    lines += ["", "Peak memory: `VmHWM` after resetting it through `/proc/self/clear_refs` before each step; "
              "'added' is above the resident size at the step's start (memory the allocator kept from an "
              "earlier step is not counted again).", "",
              "### Stage-1 inference alone (one quadrant's candidates)", "",
              f"{e2e['cores'][top]['candidates_per_quadrant']:.0f} candidates per quadrant.", "",
              "| variant | " + " | ".join(f"{c} core samples/s" for c in e2e["cores"]) + " |",
              "|---|" + "---|" * len(e2e["cores"])]
    names = list(dict.fromkeys(k for res in e2e["cores"].values() for k in res["stage1_only"]))
    for name in names:
        cells = []
        for res in e2e["cores"].values():
            r = res["stage1_only"].get(name)
            if r is None:
                cells.append("–")
            elif "skipped" in r:
                cells.append(f"skipped: {r['skipped']}")
            else:
                extra = f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
                cells.append(f"{r['samples_per_s']:,.0f}{extra}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict) -> str:
    """docs/benchmarks.md."""
    parts = summary["parts"]
    lines = ["# Benchmarks", "",
             "Produced by `make bench` (`benchmarks/run_all.py`, then `benchmarks/report.py`); figures are medians of "
             "several runs, machine-readable in `outputs/bench/bench.json`. The machine is shared, so the load average "
             "is given with each part and ratios measured in the same run are more reliable than absolute times.", ""]
    if summary["missing"]:
        lines += [f"Not run: {', '.join(summary['missing'])}.", ""]
    if parts.get("e2e"):
        lines += _e2e_lines(parts["e2e"], title="End to end, the seed's cascade: read → filter → select → cutouts → "
                            "stage 1 → stage 2 → catalogue", target=TARGET_QPS)
    if parts.get("e2e_neocascade"):
        lines += [""] + _e2e_lines(parts["e2e_neocascade"], title="End to end, the shipped neocascade (peaks selector, "
                                   "one residual CNN, streak veto)", target=TARGET_QPS_NEOCASCADE)
    skies = parts.get("skies")
    if skies:
        lines += ["", "## The shipped detector on other skies, with and without the trail detector", "",
                  f"`benchmarks/bench_skies.py`: {skies['images']} simulated quadrants of each preset, {skies['threads']} "
                  f"threads, median of {skies['repeats']} passes; load average {skies['load_average_start'][0]:.1f}. "
                  "With trails: `detect_image`, then the trail detector (`trails=default`) and the merge of points on "
                  "trails, as `detect.py trails=default`.", "",
                  "| sky | candidates / quadrant | quadrants/s | with trails | trail cost | target |",
                  "|---|---|---|---|---|---|"]
        for sky, r in skies["skies"].items():
            target = skies["targets_quadrants_per_s"].get(sky)
            lines.append(f"| {sky} | {r['candidates_per_quadrant']:.0f} | {r['cascade']['quadrants_per_s']:.2f} | "
                         f"{r['cascade_and_trails']['quadrants_per_s']:.2f} | +{100 * r['trail_cost_over_cascade']:.0f} % | "
                         f"{'≥ %.1f' % target if target else '–'} |")
    ratios = summary.get("ratios", {})
    cand = parts.get("candidates")
    if cand:
        lines += ["", "## Reference implementations (same run, ratios = reference time / ours)", "",
                  f"Load average {cand['load_average'][0]:.1f}; median of {cand['repeats']} runs.", "",
                  "| comparison | " + " | ".join(f"{r['threads']} thread(s)" for r in cand["rows"]) + " |",
                  "|---|" + "---|" * len(cand["rows"])]
        for label, ref, ours in (("Gaussian filter: scipy.ndimage.gaussian_filter / ours", "scipy_gaussian_few_nan",
                                  "gaussian_few_nan"),
                                 ("Footprint: per-block Python loop / ours", "footprint_loop_k50", "footprint_k50")):
            lines.append(f"| {label} | " + " | ".join(
                f"{r[ref][0] * 1e3:.0f} ms / {r[ours][0] * 1e3:.0f} ms = {r[ref][0] / r[ours][0]:.1f}×"
                for r in cand["rows"]) + " |")
    sel = parts.get("selectors")
    if sel:
        lines += ["", "## Selectors: sep (Source Extractor) vs our local maxima", "",
                  f"{sel['images']} simulated quadrants, {sel['n_asteroids']} asteroids, {sel['threads']} thread; "
                  f"sep {sel['sep_version'] or 'not installed (comparison skipped)'}; load {sel['load_average'][0]:.1f}.",
                  "", "| selector | s/quadrant | candidates/quadrant | completeness r=1 px | r=3 px | r=3, mag<19 | "
                  "r=3, mag≥19 |", "|---|---|---|---|---|---|---|"]
        for name, e in sel["selectors"].items():
            lines.append(f"| {name} | {e['seconds_per_quadrant']:.2f} | {e['candidates_per_quadrant']:.0f} | "
                         f"{e['completeness_r1']:.3f} | {e['completeness_r3']:.3f} | {e['completeness_r3_mag_lt_19']:.3f}"
                         f" | {e['completeness_r3_mag_ge_19']:.3f} |")
        if "sep_time_over_local_maxima_time" in ratios:
            lines += ["", f"sep time / local-maxima time = {ratios['sep_time_over_local_maxima_time']:.2f} "
                      "(both include their own filtering and noise estimate)."]
    if summary.get("training_samples_per_s"):
        tr = parts["training"]
        lines += ["", "## Training throughput", "",
                  f"Batch {tr['setup']['batch_size']}, {tr['setup']['threads']} threads, median of "
                  f"{tr['setup']['runs']} runs.", "", "| model | plain torch samples/s | Lightning samples/s |",
                  "|---|---|---|"]
        for m, r in summary["training_samples_per_s"].items():
            lines.append(f"| {m} | {r['plain']:.0f} | {r['lightning']:.0f} |")
        if "training_rf_fit_s" in summary:
            lines.append(f"| rf (100 trees) | {summary['training_rf_samples'] / summary['training_rf_fit_s']:.0f} "
                         f"(fit {summary['training_rf_fit_s']:.1f} s on {summary['training_rf_samples']}) | – |")
    if "simulator_s_per_quadrant" in summary:
        sim = parts["simulator"]
        lines += ["", "## Simulator", "", f"{summary['simulator_s_per_quadrant']:.3f} s per full quadrant on one core "
                  f"(median of {sim['runs']}; target ≤ {sim['target_seconds']} s).", ""]
    lines += ["", "![benchmarks](bench.png)", ""]
    return "\n".join(lines)


def figure(summary: dict, path: Path) -> None:
    """Step times (stacked) per core count and variant, and end-to-end quadrants/s per variant."""
    e2e = summary["parts"].get("e2e")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if e2e:
        ax = axes[0]
        labels, bottoms = [], []
        bars = [(c, v) for c in e2e["cores"] for v in ("fp32_reference", "default")]
        for i, (c, v) in enumerate(bars):
            labels.append(f"{c} core\n{v.replace('_reference', '')}")
            bottom = 0.0
            for j, (s, t) in enumerate(e2e["cores"][c]["steps"][v]["seconds"].items()):
                ax.bar(i, t, bottom=bottom, color=plt.cm.tab10(j), label=s if i == 0 else None)
                bottom += t
            bottoms.append(bottom)
        ax.set_xticks(range(len(bars)), labels)
        ax.set_ylabel("seconds per quadrant")
        ax.set_title("where the time goes")
        ax.legend(fontsize=8)
        ax = axes[1]
        variants = list(next(iter(e2e["cores"].values()))["variants"])
        width = 0.8 / len(e2e["cores"])
        for k, (c, res) in enumerate(e2e["cores"].items()):
            ax.bar([i + k * width for i in range(len(variants))], [res["variants"][v]["quadrants_per_s"] for v in variants],
                   width, label=f"{c} core(s)")
        ax.axhline(TARGET_QPS, color="k", ls="--", lw=1, label="target")
        ax.set_xticks([i + width * (len(e2e["cores"]) - 1) / 2 for i in range(len(variants))],
                      [v.replace("_", "\n") for v in variants], fontsize=7)
        ax.set_ylabel("quadrants / s (end to end)")
        ax.set_title("inference variants")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> int:
    parts = _load()
    summary = merge(parts)
    save_json(BENCH / "bench.json", summary, overwrite=True)
    text = markdown(summary)
    # sections other scripts write into the same file (bench_dask.py's) survive the rewrite
    old = (DOCS / "benchmarks.md").read_text() if (DOCS / "benchmarks.md").is_file() else ""
    for name, body in marked_sections(old).items():
        text = replace_section(text, name, body)
    save_text(DOCS / "benchmarks.md", text, overwrite=True)
    figure(summary, DOCS / "bench.png")
    print(f"wrote {BENCH / 'bench.json'}, {DOCS / 'benchmarks.md'}, {DOCS / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
