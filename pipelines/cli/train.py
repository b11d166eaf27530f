"""Fine-tune CLIP with PixelCLIP on Ray Train (DDP) over training-ready shards; a run of the same name
resumes from its last checkpoint."""

from __future__ import annotations

from pipelines.cli.common import add_address
from pipelines.cli.training import add_training_arguments, masks, validation

HELP = "fine-tune with Ray Train (DDP) on training-ready shards"


def add_arguments(p) -> None:
    add_training_arguments(p, "run")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts before the run fails")
    p.add_argument("--placement", default="PACK", choices=["PACK", "SPREAD", "STRICT_SPREAD"],
                   help="where the workers go: STRICT_SPREAD puts one per node, so a lost node costs one worker")
    p.add_argument("--register-as", help="register the final model under this MLflow registry name")
    add_address(p)


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.train.driver import TrainJobConfig, run_train, summary_json
    from pixelclip.config import load_config

    cfg = load_config(args.preset, args.overrides)
    job = TrainJobConfig(data=args.data, storage=args.storage, name=args.name, model=cfg.to_dict(),
                         workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                         max_failures=args.max_failures, placement=args.placement, register_as=args.register_as,
                         validation=validation(args), masks=masks(args), precision=args.precision).validate()
    connect(args.address)
    print(summary_json(run_train(job)))
