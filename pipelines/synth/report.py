"""The SynthScenes benchmark's numbers and their presentation: statistics over seeds, the paper's claims
checked one by one, REPORT.md, and the two figures (mIoU during training, segmentations before and
after). Plain data in, files out; the run itself is `pipelines.synth.bench`.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

# The paper's Table 3a (ConvNeXt-B, SA-1B masks, mIoU averaged over its five benchmarks) for shape only.
PAPER_3A = {"baseline": 18.7, "pixelclip": 35.0, "no-clustering": 3.5, "no-text-encoder": 29.7,
            "fixed-names": 31.0, "no-momentum": 30.4}


def step0_gap(rows: list[dict], base: dict) -> float | None:
    """Largest |step-0 validation - evaluate stage| over trials: both measure the starting CLIP."""
    gaps = [abs(r["val_miou"][0] - base["miou"]) for r in rows if 0 in r["val_miou"]]
    return round(max(gaps), 3) if gaps else None


def _stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": round(statistics.fmean(vals), 2), "std": round(statistics.stdev(vals), 2) if len(vals) > 1
            else 0.0, "min": round(min(vals), 2), "max": round(max(vals), 2), "n": len(vals)}


def _final(row: dict, metric: str = "val_miou") -> float | None:
    h = row[metric]
    return h[max(h)] if h else None


def summarize(rows: list[dict], base: dict, k_default: int) -> dict:
    """Mean, spread and gain over the baseline of each variant's final mIoU; the K sweep."""
    table = {}
    for v in dict.fromkeys(r["variant"] for r in rows if r["clusters"] is None):
        runs = [r for r in rows if r["variant"] == v and r["clusters"] is None]
        entry = {m: _stats([_final(r, m) for r in runs]) for m in ("val_miou", "val_miou_stuff", "val_miou_things")}
        # the gain over the same trial's step-0 validation: the same scenes, so the scenes' difficulty cancels
        entry["gain"] = _stats([_final(r) - r["val_miou"].get(0, base["miou"]) for r in runs if _final(r) is not None])
        entry["best_step"] = _stats([max(r["val_miou"], key=r["val_miou"].get) for r in runs if r["val_miou"]])
        table[v] = entry
    ks = {k_default: table.get("pixelclip", {}).get("val_miou")}
    for k in sorted({r["clusters"] for r in rows if r["clusters"] is not None}):
        ks[k] = _stats([_final(r) for r in rows if r["clusters"] == k])
    start = _stats([r["val_miou"][0] for r in rows if 0 in r["val_miou"]])
    return {"variants": table, "clusters": dict(sorted(ks.items())), "start": start}


def claims(summary: dict, base: dict) -> list[dict]:
    """The paper's claims, each checked against this run: holds when the difference exceeds the seeds' spread."""
    t = summary["variants"]

    def diff(a: str, b: str | None) -> tuple[float | None, float, int]:
        if a not in t or (b is not None and b not in t) or t[a]["val_miou"]["mean"] is None:
            return None, 0.0, 0
        ma = t[a]["val_miou"]
        if b is None:  # against the starting CLIP on the same validation scenes (step 0) where it was measured
            start = (summary.get("start") or {}).get("mean")
            return round(ma["mean"] - (base["miou"] if start is None else start), 2), ma["std"], ma["n"]
        mb = t[b]["val_miou"]
        return round(ma["mean"] - mb["mean"], 2), max(ma["std"], mb["std"]), min(ma["n"], mb["n"])

    out = []
    for text, a, b, sign in (
            ("fine-tuning with unlabeled masks raises mIoU above the starting CLIP", "pixelclip", None, 1),
            ("without semantic clustering the model collapses", "no-clustering", "pixelclip", -1),
            ("the CLIP text encoder (prompts) beats free centroids", "pixelclip", "no-text-encoder", 1),
            ("learnable class prompts beat fixed class names", "pixelclip", "fixed-names", 1),
            ("the momentum encoder helps", "pixelclip", "no-momentum", 1)):
        d, spread, n = diff(a, b)
        holds = None if d is None or n < 2 else (sign * d > spread)  # one seed has no spread to judge by
        out.append({"claim": text, "difference": d, "spread": spread, "holds": holds,
                    "compared": f"{a} - {b or 'starting CLIP'}"})
    return out


def _fmt(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.1f} ± {s['std']:.1f}" if s["n"] > 1 else f"{s['mean']:.1f}"


def write_report(out_dir: Path, result: dict) -> Path:
    tb, summ = result["testbed"], result["summary"]
    seeds = {v: e["val_miou"]["n"] for v, e in summ["variants"].items()}
    start = summ.get("start") or {}
    lines = [
        "# SynthScenes: PixelCLIP's claims in miniature",
        "",
        f"Written by `{result['command']}` on {result['date']} ({result['machine']}), "
        f"{result['minutes']:.1f} minutes end to end. Numbers are zero-shot mIoU (%) on held-out SynthScenes "
        f"({len(result['class_names'])} classes: {result['n_stuff']} stuff, "
        f"{len(result['class_names']) - result['n_stuff']} things), MaskCLIP readout, one prompt template, no "
        "background class; mean ± standard deviation over seeds ("
        + ", ".join(f"{v} {n}" for v, n in seeds.items()) + "). Every trial went through the real stages (prepare "
        "on Ray Data, Ray Train inside Ray Tune, MLflow tracking), starting from the project's SynthScenes CLIP.",
        "",
        *goal_lines(result),
        f"## During training: the last validation (the first {tb['val_limit']} scenes of `eval`)",
        "",
        "What the training stage measured at its last step, on fewer scenes than the goal section above (which "
        "decides); the gain is over the same trial's step-0 validation, on the same scenes.",
        "",
        "| variant | seeds | mIoU | stuff | things | gain over the starting CLIP "
        "| paper (Table 3a, 5-benchmark mean) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| uniformly random labels (chance, all `eval` scenes) | | {result['chance']['miou']:.1f} | "
        f"{result['chance']['stuff']:.1f} | {result['chance']['things']:.1f} | | |",
        f"| starting CLIP (step 0 of every trial) | {start.get('n', '')} | {_fmt(start)} | | | 0 | "
        f"{PAPER_3A['baseline']} |",
    ]
    for v, e in summ["variants"].items():
        lines.append(f"| {v} | {e['val_miou']['n']} | {_fmt(e['val_miou'])} | {_fmt(e['val_miou_stuff'])} "
                     f"| {_fmt(e['val_miou_things'])} | {_fmt(e['gain'])} | {PAPER_3A.get(v, 'n/a')} |")
    lines += ["", *pilot_lines(result)]
    lines += ["## Number of clusters K (Table 3b in miniature, last validation)", "",
              "| K | mIoU |", "|---:|---:|"]
    lines += [f"| {k} | {_fmt(s)} |" for k, s in summ["clusters"].items()]
    lines += ["", "## The paper's claims on the last validation (a looser rule than the goal section's)", "",
              "A claim holds here when the difference of means exceeds the larger standard deviation of the two "
              "(n/a with a single seed); no scene-bootstrap interval. Where this and the goal section disagree, the "
              "goal section (all scenes of both splits, intervals) decides.",
              "", "| claim | compared | difference | spread | holds here |", "|---|---|---:|---:|---|"]
    for c in result["claims"]:
        holds = {True: "yes", False: "no", None: "n/a"}[c["holds"]]
        d = "n/a" if c["difference"] is None else f"{c['difference']:+.1f}"
        lines.append(f"| {c['claim']} | {c['compared']} | {d} | {c['spread']:.1f} | {holds} |")
    lines += ["", "## During training", "", "![mIoU during training](curves.png)", "",
              "Each line is the mean over seeds (the band spans min to max) of the validation the training stage "
              f"ran every {tb['validate_every']} steps; step 0 is the starting CLIP (largest difference between a "
              f"trial's step-0 validation and the evaluate stage's baseline: {result['step0_vs_evaluate']} mIoU).", "",
              "## Before and after", "", "![segmentations](segmentations.png)", "",
              "Held-out scenes: the image, the truth, the starting CLIP and PixelCLIP of every seed (final step), "
              f"all zero-shot with the {len(result['class_names'])} class names.", "",
              "## The testbed", "", "| setting | value |", "|---|---|"]
    for k, v in tb.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", result.get("choice", "").strip(), ""]
    if result.get("failed"):
        lines += ["## Failed trials", ""] + [f"- {f}" for f in result["failed"]] + [""]
    notes = out_dir / "NOTES.md"
    if notes.exists():  # written by a person after reading the numbers; kept apart from the measured part
        lines += ["## Reading these numbers (written after the run, from `NOTES.md`)", "", notes.read_text().strip(),
                  ""]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def draw_curves(rows: list[dict], base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    groups = [("variant", [r for r in rows if r["clusters"] is None], lambda r: r["variant"]),
              ("K", [r for r in rows if r["clusters"] is not None or r["variant"] == "pixelclip"],
               lambda r: f"K={r['clusters'] or 'default'}")]
    for ax, (title, subset, key) in zip(axes, groups, strict=True):
        for label in dict.fromkeys(key(r) for r in subset):
            runs = [r["val_miou"] for r in subset if key(r) == label and r["val_miou"]]
            if not runs:
                continue
            steps = sorted(set.intersection(*(set(h) for h in runs)))
            vals = [[h[s] for h in runs] for s in steps]
            ax.plot(steps, [statistics.fmean(v) for v in vals], label=label, marker="o", ms=3)
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.15)
        ax.axhline(base["miou"], color="grey", ls="--", lw=1, label="starting CLIP")
        ax.set_xlabel("training step")
        ax.set_ylabel("zero-shot mIoU (%)")
        ax.set_title(f"by {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_segmentations(checkpoints: dict[str, str], tb: dict, path: Path, opts, n: int = 4) -> None:
    """Held-out scenes: image, truth, the starting CLIP, then one column per fine-tuned checkpoint
    ({title: .safetensors URI}); a legend of the class colours below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from pipelines.models import load_segmenter
    from pixelclip.config import SYNTH_CHECKPOINT
    from pixelclip.synth import CLASS_NAMES, SceneConfig, scene_at
    from pixelclip.viz import palette

    names = list(CLASS_NAMES)
    models = {"starting CLIP": load_segmenter(f"openclip:pixelclip-synth-vit:{SYNTH_CHECKPOINT}", templates="single",
                                              image_size=tb["scene_px"], opts=opts)}
    models.update({title: load_segmenter(uri, templates="single", opts=opts) for title, uri in checkpoints.items()})
    colours = palette(len(names))
    fig, axes = plt.subplots(n, 2 + len(models), figsize=(2.2 * (2 + len(models)), 2.2 * n))
    for i in range(n):
        scene = scene_at(tb["eval_seed"], i, "eval", SceneConfig(size=tb["scene_px"]))
        panels = [("image", scene.image), ("truth", colours[scene.label])]
        for title, seg in models.items():
            panels.append((title, colours[seg.segment(scene.image, names)[0].cpu().numpy()]))
        for j, (title, img) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        present = sorted(set(scene.label.ravel().tolist()))
        axes[i, 0].set_ylabel(", ".join(names[c] for c in present), fontsize=6)
    handles = [Patch(color=colours[c] / 255, label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the goal, judged on the final checkpoints scored scene by scene (synth_bench.final_scores) -----------------

GOAL_RATIO = 1.3  # PixelCLIP's mean mIoU over the starting CLIP's, at least
GOAL_SEEDS = 5  # seeds for the two headline goals
OTHER_SEEDS = 3  # seeds for the other comparisons

COMPARISONS = (("no-text-encoder", "the CLIP text encoder (prompts) vs free centroids"),
               ("fixed-names", "learnable class prompts vs fixed class names"),
               ("no-momentum", "the momentum encoder vs none"))


def goals(final: dict) -> list[dict]:
    """The benchmark's goals, each judged on every evaluation split; a goal holds when it holds on all."""
    out = []
    v = final["variants"]
    splits = list(final["splits"])

    def per_split(fn) -> dict:
        return {s: fn(s) for s in splits}

    def beat_start(s: str) -> dict:
        e, base = v.get("pixelclip", {}).get(s), final["start"][s]["miou"]
        if not e:
            return {"holds": None, "why": "no PixelCLIP trial"}
        m = e["miou"]
        ratio = m["mean"] / base if base else None
        seeds_above = sum(x > base for x in m["values"])
        holds = None if m["n"] < GOAL_SEEDS else bool(ratio >= GOAL_RATIO and seeds_above == m["n"])
        return {"holds": holds, "ratio": round(ratio, 3) if ratio else None, "seeds_above": seeds_above,
                "n": m["n"], "mean": m["mean"], "std": m["std"], "interval": m["interval"], "start": base,
                "stuff": e["stuff"]["mean"], "things": e["things"]["mean"],
                "why": f"{m['n']} seed(s), {GOAL_SEEDS} needed" if m["n"] < GOAL_SEEDS else ""}

    def collapse(s: str) -> dict:
        a, b = v.get("no-clustering", {}).get(s), v.get("pixelclip", {}).get(s)
        if not a or not b:
            return {"holds": None, "why": "a variant is missing"}
        spread = max(a["miou"]["std"], b["miou"]["std"])
        d = a["vs_pixelclip"]
        n = min(a["miou"]["n"], b["miou"]["n"])
        holds = None if n < GOAL_SEEDS else bool(-d["difference"] > spread)
        return {"holds": holds, "difference": d["difference"], "interval": d["interval"], "spread": spread, "n": n,
                "why": f"{n} seed(s), {GOAL_SEEDS} needed" if n < GOAL_SEEDS else ""}

    out.append({"goal": f"PixelCLIP beats the starting CLIP (mean >= {GOAL_RATIO}x, every seed above)",
                "splits": per_split(beat_start)})
    out.append({"goal": "without semantic clustering ends below PixelCLIP by more than the larger spread",
                "splits": per_split(collapse)})
    for variant, text in COMPARISONS:
        def decide(s: str, variant=variant) -> dict:
            a, b = v.get("pixelclip", {}).get(s), v.get(variant, {}).get(s)
            if not a or not b:
                return {"holds": None, "why": "a variant is missing"}
            d = b["vs_pixelclip"]  # ablation - PixelCLIP
            spread = max(a["miou"]["std"], b["miou"]["std"])
            n = min(a["miou"]["n"], b["miou"]["n"])
            lo, hi = d["interval"]
            if n < OTHER_SEEDS:
                verdict, holds = f"not decided: {n} seed(s)", None
            elif -d["difference"] > spread and hi < 0:
                verdict, holds = "PixelCLIP better", True
            elif d["difference"] > spread and lo > 0:
                verdict, holds = "the ablation better", False
            else:
                verdict, holds = "not decided: within the spread or the interval", None
            return {"holds": holds, "verdict": verdict, "difference": -d["difference"], "interval": [-hi, -lo],
                    "spread": spread, "n": n}
        out.append({"goal": text, "splits": per_split(decide)})
    for g in out:
        vals = [r["holds"] for r in g["splits"].values()]
        g["holds"] = None if None in vals else all(vals)
    return out


def _yn(h) -> str:
    return {True: "yes", False: "no", None: "not decided"}[h]


def goal_lines(result: dict) -> list[str]:
    """REPORT.md's goal section: both evaluation splits, scene-bootstrap intervals."""
    final = result.get("final")
    if not final:
        return []
    splits = final["splits"]
    desc = ", ".join(f"`{s}` ({d['scenes']} scenes, seed {d['seed']})" for s, d in splits.items())
    lines = ["## The goal, on the final checkpoints", "",
             f"Every trial's final checkpoint and the starting CLIP scored on all scenes of each evaluation split: "
             f"{desc}. Mean ± sd over seeds; [a, b] is the 95% scene-bootstrap interval (1000 draws of the "
             "split's scenes, one draw shared by every model, so a difference's interval excludes the scenes' "
             "own difficulty).", "",
             "| goal | " + " | ".join(splits) + " | holds |", "|---|" + "---|" * len(splits) + "---|"]
    for g in result["goals"]:
        cells = []
        for s in splits:
            r = g["splits"][s]
            if "ratio" in r:
                cells.append(f"{r['mean']:.1f} ± {r['std']:.1f} {r['interval']} vs {r['start']:.1f}: "
                             f"x{r['ratio']:.2f}, {r['seeds_above']}/{r['n']} seeds above; {_yn(r['holds'])}")
            elif "difference" in r:
                extra = r.get("verdict") or _yn(r["holds"])
                cells.append(f"{r['difference']:+.1f} {r['interval']} (spread {r['spread']:.1f}, n={r['n']}): {extra}")
            else:
                cells.append(r.get("why", "n/a"))
        lines.append(f"| {g['goal']} | " + " | ".join(cells) + f" | {_yn(g['holds'])} |")
    lines += ["", "| model | " + " | ".join(f"{s} mIoU | {s} stuff | {s} things" for s in splits) + " |",
              "|---|" + "---:|---:|---:|" * len(splits)]
    row = [f"{final['start'][s][m]:.1f}" for s in splits for m in ("miou", "stuff", "things")]
    lines.append("| starting CLIP | " + " | ".join(row) + " |")
    for m in final["start"][next(iter(splits))]["readouts"]:
        row = [f"{final['start'][s]['readouts'][m][k]:.1f}" for s in splits for k in ("miou", "stuff", "things")]
        lines.append(f"| starting CLIP, {m} readout | " + " | ".join(row) + " |")
    for v, e in final["variants"].items():
        row = [f"{_fmt(e[s][m])} {e[s][m]['interval']}" for s in splits for m in ("miou", "stuff", "things")]
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    pc = [t for t in final["trials"] if t.get("readouts")]
    for m in pc[0]["readouts"] if pc else []:
        row = [_fmt(_stats([t["readouts"][m][s][k] for t in pc])) for s in splits for k in ("miou", "stuff", "things")]
        lines.append(f"| pixelclip, {m} readout | " + " | ".join(row) + " |")
    return [*lines, ""]


def pilot_lines(result: dict) -> list[str]:
    """Every pilot run for this testbed, with its outcome on the development split."""
    pilots = result.get("pilots") or []
    if not pilots:
        return []
    lines = ["## Every pilot (development split)", "",
             "Run before the final command with `--pilot`; none is left out. Final validation mIoU on the "
             "development split (start -> end, best step in brackets).", "",
             "| pilot | date | steps | variant | seed | start -> end (best) | things | stuff |",
             "|---|---|---:|---|---:|---|---:|---:|"]
    for p in pilots:
        for key, r in sorted(p["results"].items()):
            variant, _, seed = key.rpartition("/")
            h = {int(k): v for k, v in r["val_miou"].items()}
            if not h:
                lines.append(f"| {p['name']} | {p['date']} | {p['steps']} | {variant} | {seed} | failed: "
                             f"{r.get('error')} | | |")
                continue
            best = max(h, key=h.get)
            th = {int(k): v for k, v in r["things"].items()}
            st = {int(k): v for k, v in r["stuff"].items()}
            lines.append(f"| {p['name']} | {p['date']} | {p['steps']} | {variant} | {seed} | {h[min(h)]:.1f} -> "
                         f"{h[max(h)]:.1f} ({h[best]:.1f} at {best}) | {th[max(th)]:.1f} | {st[max(st)]:.1f} |")
    return [*lines, ""]
