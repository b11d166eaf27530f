"""The `pixelclip` command.

    pixelclip demo [--steps 20] [--out out/demo]
    pixelclip segment photo.jpg --classes "cat, grass, sky" --checkpoint ckpt.safetensors -o out.png
    pixelclip config tiny [--set prompts.num_clusters=32]       # print a resolved configuration
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _segment(args) -> None:
    import numpy as np
    from PIL import Image

    from pixelclip.infer import Segmenter
    from pixelclip.io import load_pixelclip
    from pixelclip.viz import overlay

    names = [c.strip() for c in args.classes.split(",") if c.strip()]
    task, _ = load_pixelclip(args.checkpoint, device=args.device)
    seg = Segmenter.from_pixelclip(task, protocol=args.protocol)
    image = Image.open(args.image)
    labels = seg.segment(image, names)[0]
    overlay(image, labels, names).save(args.output)
    if args.labels:
        lab = labels.cpu().numpy().astype(np.uint8 if len(names) < 256 else np.uint16)
        Image.fromarray(lab).save(args.labels)
    print(f"wrote {args.output}" + (f" and {args.labels}" if args.labels else ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="pixelclip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fine-tune the tiny preset on CPU and segment an image")
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--out", type=Path, default=Path("out/demo"))
    d.add_argument("--preset", default="tiny")
    d.add_argument("--set", dest="overrides", action="append", default=[])
    s = sub.add_parser("segment", help="segment an image with typed class names")
    s.add_argument("image", type=Path)
    s.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, grass, sky"')
    s.add_argument("--checkpoint", required=True, type=Path, help="a PixelCLIP checkpoint (.safetensors)")
    s.add_argument("-o", "--output", type=Path, default=Path("segmentation.png"))
    s.add_argument("--labels", type=Path, help="also write the label map as a PNG")
    s.add_argument("--protocol", choices=["whole", "slide"], default="whole")
    s.add_argument("--device", default="cpu")
    c = sub.add_parser("config", help="print a resolved configuration as YAML")
    c.add_argument("source", help="a preset name or a YAML file")
    c.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    try:
        if args.command == "demo":
            from pipelines.demo import run

            run(args.steps, args.out, args.preset, args.overrides)
        elif args.command == "segment":
            _segment(args)
        else:
            from pixelclip.config import load_config

            print(load_config(args.source, args.overrides).to_yaml(), end="")
    except (ValueError, FileNotFoundError) as e:
        print(f"pixelclip {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
