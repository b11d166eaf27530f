"""Sweep any configuration field (the number of clusters K, the prompt length l, ...) with Ray Tune over
training trials; ASHA stops the weak ones; the best can be registered."""

from __future__ import annotations

import os

from pipelines.cli.common import add_address
from pipelines.cli.jobs import flags, load_job
from pipelines.cli.training import add_training_arguments, training_flags

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
    p.add_argument("--max-failures", type=int, default=1,
                   help="Tune's restarts of a failed trial (each trial's worker restarts: --set train.max_failures=N)")
    p.add_argument("--register-as", help="register the best trial's model under this MLflow registry name")
    p.add_argument("--alias", default="candidate", help="alias pointed at the registered best model")
    add_address(p)


def job_from(args):
    from pipelines.stages.tune.job import parse_search, parse_variant

    fields = {"train": training_flags(args, bool(args.job), skip=("max_failures",)),
              **flags(args, {"storage": "storage", "name": "name", "num_samples": "num_samples", "metric": "metric",
                             "metric_mode": "mode", "scheduler": "scheduler", "grace_period": "grace_period",
                             "reduction_factor": "reduction_factor", "max_concurrent": "max_concurrent",
                             "max_failures": "max_failures", "register_as": "register_as", "alias": "alias"})}
    if args.search:
        fields["search"] = parse_search(args.search)
    if args.variant:
        fields["variants"] = dict(map(parse_variant, args.variant))
    return load_job("tune", args, fields)


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.train.driver import worker_env
    from pipelines.stages.tune.sweep import format_summary, run_tune
    from pipelines.storage import StorageOptions

    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    job = job_from(args)
    # the trials get the endpoint and the tracking URI in their runtime env, and read the storage keys
    # from their node's environment (never from a runtime env, which Ray logs). A driver that
    # `ray job submit` started already runs in the job's runtime env, which its trials share (and Ray
    # refuses a second one that names the same variables).
    env = worker_env(StorageOptions.from_env(), job.train.tracking_uri or tracking)
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    connect(args.address, runtime_env=None if in_job else {"env_vars": env})
    print(format_summary(run_tune(job), job.metric))
