"""The stages, one room each: data flows prepare -> train (-> tune, which runs training jobs) ->
register -> evaluate -> segment, through object storage and the MLflow registry, never through
imports. A stage may use the shared modules of `pipelines/` (storage, MLflow client, models and
weights, images, Ray helpers) and the library; `tests/pipelines/test_layers.py` checks it."""
