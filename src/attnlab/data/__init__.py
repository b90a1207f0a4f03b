"""Data layer: base DataModule over HF datasets, fingerprints, samplers, the shared text tokenizer."""

from attnlab.data.datamodule import HFDataModule, PreprocessedSplit
from attnlab.data.fingerprint import dataset_fingerprint, params_fingerprint
from attnlab.data.sampler import EpochSeededSampler, LengthBucketBatchSampler
from attnlab.data.tokenizer import TextTokenizer

__all__ = [
    "EpochSeededSampler",
    "HFDataModule",
    "LengthBucketBatchSampler",
    "PreprocessedSplit",
    "TextTokenizer",
    "dataset_fingerprint",
    "params_fingerprint",
]
