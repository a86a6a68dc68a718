"""Input pipelines.

The tf.data pipeline (`input_pipeline`: `eval_batches`, `get_dataset_info`, `train_batches`)
needs TensorFlow and TFDS; it is imported on first use of one of those names, so the TF-free
modules of this package (`dataset_info`, `fashion_mnist_idx`, `in_memory` for Fashion-MNIST,
`device_batches`, `device_data`, `normalization`) import without TensorFlow.
"""

import importlib
from typing import Any

from prospr_jax.experiment.data.dataset_info import DatasetInfo

_INPUT_PIPELINE_NAMES = ("eval_batches", "get_dataset_info", "train_batches")


def __getattr__(name: str) -> Any:
  if name in _INPUT_PIPELINE_NAMES:
    input_pipeline = importlib.import_module("prospr_jax.experiment.data.input_pipeline")
    return getattr(input_pipeline, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DatasetInfo", *_INPUT_PIPELINE_NAMES]
