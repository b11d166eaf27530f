"""Stage `evaluate`: `job` (zero-shot mIoU with Ray Data batch inference) and `report` (the results'
tables and files)."""
