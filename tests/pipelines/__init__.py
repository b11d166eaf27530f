"""Tests of the application (`pipelines/`): stages, shared modules, the local services, the cluster files."""
