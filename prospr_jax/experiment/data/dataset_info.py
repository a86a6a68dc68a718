"""What a model and a training loop need to know about a data set (`DatasetInfo`), TF-free."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a training loop need to know about a data set.

  `image_shape` is the shape of the images the pipeline yields (e.g. (224, 224, 3)
  for ImageNet, whose stored images vary in size); `num_train` and `num_test` count
  the whole train and evaluation splits over all processes.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_test: int
