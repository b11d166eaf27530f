"""Fine-tune CLIP with PixelCLIP on Ray Train (DDP) over training-ready shards; a run of the same name
resumes from its last checkpoint. The job comes from the flags, or a YAML job file (`--job`) that the
given flags and `--set` override; `pixelclip config --job train` prints every field."""

from __future__ import annotations

from pipelines.cli.common import add_address
from pipelines.cli.jobs import flags, load_job
from pipelines.cli.training import add_training_arguments, training_flags

HELP = "fine-tune with Ray Train (DDP) on training-ready shards"


def add_arguments(p) -> None:
    add_training_arguments(p, "run")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts before the run fails")
    p.add_argument("--placement", default="PACK", choices=["PACK", "SPREAD", "STRICT_SPREAD"],
                   help="where the workers go: STRICT_SPREAD puts one per node, so a lost node costs one worker")
    p.add_argument("--register-as", help="register the final model under this MLflow registry name")
    add_address(p)


def job_from(args):
    fields = {**training_flags(args, bool(args.job)),
              **flags(args, {"storage": "storage", "name": "name", "register_as": "register_as"})}
    return load_job("train", args, fields)


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.train.driver import run_train, summary_json

    job = job_from(args)
    connect(args.address)
    print(summary_json(run_train(job)))
