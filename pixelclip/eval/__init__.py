"""Evaluation: mIoU (`miou`) and the zero-shot benchmark readers (`datasets`, `classnames`)."""

from .datasets import BENCHMARKS, BenchmarkDataset, Sample, open_benchmark

__all__ = ["BENCHMARKS", "BenchmarkDataset", "Sample", "open_benchmark"]
