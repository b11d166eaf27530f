"""Stage `train`: `driver` (the job, the Ray Train trainer, the MLflow run, registration), `loop` (what
each worker runs), `checkpoints`, `progress` and `metric_sink` (rank 0's lines and MLflow metrics),
`reader` (training batches from Ray Data), `online_masks` (DINO masks per crop), `validation`."""
