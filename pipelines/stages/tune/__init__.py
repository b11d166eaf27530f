"""Stage `tune`: `sweep` (the job, the search space, Ray Tune over training trials) and `runs` (the
sweep's MLflow parent run, its trials' child runs and the registration of the best)."""
