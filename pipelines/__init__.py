"""The application around the `pixelclip` library: stages on Ray, storage, MLflow and the CLI."""
