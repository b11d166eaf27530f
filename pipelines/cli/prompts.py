"""What the learned class prompts segment (`draw`, the paper's Fig. 5c-d / 7) and where they lie among
the text features of your classes (`map`, Fig. 5a-b). Both need a PixelCLIP model."""

from __future__ import annotations

from pipelines.cli.common import HelpFormatter, add_inference, add_model, add_output, add_templates

HELP = "what the learned class prompts segment (draw) and where they lie (map)"


def add_arguments(p) -> None:
    ps = p.add_subparsers(dest="prompts_command", required=True, metavar="ACTION")
    what = "a PixelCLIP model (a plain CLIP has no learned prompts)"
    d = ps.add_parser("draw", help="overlay of the nearest learned prompt per pixel, one PNG per image",
                      formatter_class=HelpFormatter)
    d.add_argument("images", nargs="+", help="photos: local paths or s3:// URIs")
    add_model(d, what)
    add_output(d, "prompts", "the output folder (<name>_prompts.png per photo)")
    add_inference(d)
    m = ps.add_parser("map", help="2-D map (PCA or t-SNE) of the prompt features among class text features",
                      formatter_class=HelpFormatter)
    add_model(m, what)
    m.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, dog, sky"')
    m.add_argument("--method", choices=["pca", "tsne"], default="pca", help="pca, or tsne (needs scikit-learn)")
    add_templates(m)
    m.add_argument("--seed", type=int, default=0, help="t-SNE's random state")
    add_output(m, "prompt_map.png", "the scatter plot PNG; the coordinates go beside it as .json")
    m.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")


def run(args) -> None:
    from pipelines.stages.prompts import draw_prompts, load_task, prompt_map, write_map

    task = load_task(args.model, device=args.device)
    if args.prompts_command == "draw":
        for path in draw_prompts(task, args.images, args.output, protocol=args.protocol,
                                 **({"max_side": args.max_side} if args.max_side else {})):
            print(f"wrote {path}")
    else:
        result = prompt_map(task, args.classes, method=args.method, templates=args.templates, seed=args.seed)
        png, js = write_map(result, args.output, title=f"{args.model} ({args.method})")
        print(f"wrote {png} and {js}")
