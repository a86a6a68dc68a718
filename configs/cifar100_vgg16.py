"""ProsPr paper setting: the authors' VGG-16 (`vgg16_prospr`) on CIFAR-100.

The CIFAR protocol of `cifar10_resnet20.py`.
"""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  return cifar10_resnet20.get_config(model="vgg16_prospr", dataset="cifar100")
