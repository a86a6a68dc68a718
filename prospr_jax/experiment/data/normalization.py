"""Per-channel pixel statistics of the training images, shared by every input pipeline.

TF-free, so the tf.data pipeline (`input_pipeline.py`) and the on-device batches
(`device_batches.py`) normalize with the same constants.
"""

MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Data set name -> (per-channel mean, per-channel std) of training pixels scaled to [0, 1].
A pipeline scales pixels to [0, 1], then computes `(x - mean) / std`; sets not listed stay in
[0, 1]."""
