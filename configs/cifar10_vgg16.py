"""ProsPr paper setting: vgg16 on cifar10 (the CIFAR protocol of `cifar10_resnet20.py`)."""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  return cifar10_resnet20.get_config(model="vgg16", dataset="cifar10")
