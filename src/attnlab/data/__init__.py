"""Data layer: base DataModule over HF datasets, fingerprints, samplers."""

from attnlab.data.datamodule import HFDataModule, PreprocessedSplit
from attnlab.data.fingerprint import dataset_fingerprint, params_fingerprint
from attnlab.data.sampler import EpochSeededSampler

__all__ = ["EpochSeededSampler", "HFDataModule", "PreprocessedSplit", "dataset_fingerprint", "params_fingerprint"]
