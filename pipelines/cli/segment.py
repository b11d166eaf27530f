"""Segment a photo with typed class names: an overlay with a legend, and the share of each class."""

from __future__ import annotations

from pathlib import Path

from pipelines.cli.common import add_inference, add_model, add_output, add_readout, add_templates

HELP = "segment a photo with typed class names, write an overlay with a legend"


def add_arguments(p) -> None:
    p.add_argument("image", help="a photo: local path or s3:// URI")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, grass, sky"')
    add_model(p)
    add_output(p, "segmentation.png", "the overlay PNG")
    p.add_argument("--labels", type=Path,
                   help="also write the label map as a PNG of class indices (8-bit; 16-bit from 256 classes)")
    add_readout(p)
    add_templates(p)
    p.add_argument("--image-size", type=int, default=None, help="the encoder's square input (default: the model's)")
    add_inference(p)


def run(args) -> None:
    from pipelines.images import parse_classes
    from pipelines.stages.segment import class_fractions, save_labels, segment_image

    labels, picture = segment_image(args.model, args.image, args.classes, device=args.device,
                                    protocol=args.protocol, mode=args.readout, templates=args.templates,
                                    image_size=args.image_size, max_side=args.max_side)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.output)
    if args.labels:
        save_labels(labels, args.labels)
    names = parse_classes(args.classes)
    print(", ".join(f"{n} {f:.1%}" for n, f in zip(names, class_fractions(labels, len(names)), strict=True)))
    print(f"wrote {args.output}" + (f" and {args.labels}" if args.labels else ""))
