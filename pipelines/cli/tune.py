"""Sweep any configuration field (the number of clusters K, the prompt length l, ...) with Ray Tune over
training trials; ASHA stops the weak ones; the best can be registered."""

from __future__ import annotations

import os

from pipelines.cli.common import add_address
from pipelines.cli.training import add_training_arguments, masks, validation

HELP = "sweep K, l (any config field) with Ray Tune + ASHA over the train stage"


def add_arguments(p) -> None:
    add_training_arguments(p, "sweep")
    p.add_argument("--search", action="append", default=[], metavar="FIELD=SPACE",
                   help="field=a,b,c (grid) or field=uniform(a,b) | loguniform(a,b) | randint(a,b); repeatable")
    p.add_argument("--variant", action="append", default=[], metavar="NAME: field=value; field=value",
                   help="a named configuration; the variants form a grid crossed with --search; repeatable")
    p.add_argument("--num-samples", type=int, default=1, help="draws of the distributions / grid repeats")
    p.add_argument("--metric", default="loss_rel", help="the reported metric that selects trials")
    p.add_argument("--metric-mode", choices=["min", "max"], default="min",
                   help="whether --metric is better low or high")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha",
                   help="asha stops weak trials early; fifo runs every trial to the end")
    p.add_argument("--grace-period", type=int, help="steps before ASHA may stop a trial (default: steps / 4)")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA keeps 1 / this of the trials a rung")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster fits)")
    p.add_argument("--register-as", help="register the best trial's model under this MLflow registry name")
    p.add_argument("--alias", default="candidate", help="alias pointed at the registered best model")
    add_address(p)


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.train.driver import worker_env
    from pipelines.stages.tune.sweep import TuneJobConfig, format_summary, parse_search, parse_variant, run_tune
    from pipelines.storage import StorageOptions
    from pixelclip.config import load_config

    cfg = load_config(args.preset, args.overrides)
    job = TuneJobConfig(data=args.data, storage=args.storage, name=args.name, model=cfg.to_dict(),
                        search=parse_search(args.search), variants=dict(map(parse_variant, args.variant)),
                        num_samples=args.num_samples, metric=args.metric,
                        mode=args.metric_mode, scheduler=args.scheduler, grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor, max_concurrent=args.max_concurrent,
                        workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                        register_as=args.register_as, alias=args.alias, validation=validation(args),
                        masks=masks(args), precision=args.precision)
    # the trials get the endpoint and the tracking URI in their runtime env, and read the storage keys
    # from their node's environment (never from a runtime env, which Ray logs). A driver that
    # `ray job submit` started already runs in the job's runtime env, which its trials share (and Ray
    # refuses a second one that names the same variables).
    env = worker_env(StorageOptions.from_env(), job.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    connect(args.address, runtime_env=None if in_job else {"env_vars": env})
    print(format_summary(run_tune(job), job.metric))
