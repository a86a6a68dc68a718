"""Input pipelines (TensorFlow / TFDS based; the rest of prospr_jax imports without TF)."""

from prospr_jax.experiment.data.input_pipeline import (
    DatasetInfo,
    eval_batches,
    get_dataset_info,
    train_batches,
)
