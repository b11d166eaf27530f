"""Pretrain the project's small CLIP on SynthScenes image-caption pairs (CPU), and write it.

    python -m pipelines.synth.pretrain -o out/synthclip --minutes 30 --seed 0   # committed: pixelclip/assets/

Under OUT:
    pixelclip-synth-vit.safetensors   the CLIP, float16 (open_clip.create_model("pixelclip-synth-vit",
                                      pretrained=path) after pixelclip.model.backbone.register_model_configs())
    train.json                        the config, the loss curve, every evaluation, the final metrics,
                                      timings and versions

The settings are `pixelclip.synth.pretrain.PretrainConfig` (its defaults are the committed run);
--config FILE reads them from JSON (e.g. the "config" of an earlier train.json), and the flags below
override single fields. The training scenes are drawn once and cached under --cache-dir. `--minutes`
is a hard budget of the whole run (pool, training, evaluations); the learning-rate cosine follows
whichever of steps or time runs out first. Use the model as

    openclip:pixelclip-synth-vit:OUT/pixelclip-synth-vit.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

from pixelclip.synth.pool import load_pool, pool_path
from pixelclip.synth.pretrain import PretrainConfig, pretrain, save_checkpoint
from pixelclip.synth.probe import make_probe

OVERRIDES = ("seed", "minutes", "steps", "batch", "lr", "pool", "threads", "eval_every", "precision",
             "patch_dropout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", dest="out", required=True, help="output folder (checkpoint and train.json)")
    p.add_argument("--config", help="JSON file of PretrainConfig fields (or a train.json with a 'config')")
    p.add_argument("--cache-dir", default="out/cache", help="where the scene pool is cached ('' : no cache)")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the scene pool")
    types = {f.name: f.type for f in dataclasses.fields(PretrainConfig)}  # "int", "float", "float | None", ...
    for name in OVERRIDES:
        kind = {"int": int, "str": str}.get(types[name], float)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"PretrainConfig.{name} (default {getattr(PretrainConfig(), name)})")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> PretrainConfig:
    base = {}
    if a.config:
        base = json.loads(Path(a.config).read_text())
        base = base.get("config", base)
    cfg = PretrainConfig.from_dict(base)
    changes = {n: getattr(a, n) for n in OVERRIDES if getattr(a, n) is not None}
    return dataclasses.replace(cfg, **changes)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    cfg = config_from_args(a)
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = load_pool(a.cache_dir or None, cfg.seed, cfg.size, cfg.pool, a.workers)
    pool_s = time.perf_counter() - t0
    probe = make_probe(cfg.seed, cfg.size, cfg.eval_scenes, cfg.single_scenes)
    print(f"pool of {len(pool)} scenes ready in {pool_s:.0f} s; probe in {time.perf_counter() - t0 - pool_s:.0f} s",
          flush=True)
    run = pretrain(cfg, pool, probe, log=lambda m: print(m, flush=True), start=t0)
    ckpt = save_checkpoint(run.model, out / f"{cfg.model}.safetensors", {"model": cfg.model})
    import open_clip

    report = {
        "config": cfg.to_dict(),
        "model": {"name": cfg.model, "open_clip_config": open_clip.get_model_config(cfg.model),
                  "parameters": sum(p.numel() for p in run.model.parameters()),
                  "checkpoint": ckpt.name, "checkpoint_bytes": ckpt.stat().st_size, "sha256": _sha256(ckpt),
                  "source": f"openclip:{cfg.model}:{ckpt}"},
        "run": {"steps": run.steps, "stopped": run.stopped, "unmasked_from": run.unmasked_from,
                "images_seen": run.steps * cfg.batch,
                "wall_s": round(time.perf_counter() - t0, 1), "pool_s": round(pool_s, 1),
                "pool_cache": str(pool_path(a.cache_dir, cfg.seed, cfg.size, cfg.pool)) if a.cache_dir else None},
        "final": run.evals[-1] if run.evals else None,
        "curve": run.curve,
        "evals": run.evals,
        "environment": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                        "threads": cfg.threads},
        "command": "python -m pipelines.synth.pretrain " + " ".join(argv if argv is not None else _argv()),
    }
    (out / "train.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB) and {out / 'train.json'}: {run.steps} steps "
          f"({run.stopped}) in {report['run']['wall_s']:.0f} s", flush=True)
    return report


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
