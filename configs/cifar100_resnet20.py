"""ProsPr paper setting: the authors' ResNet-20 (`resnet20_prospr`) on CIFAR-100.

The CIFAR protocol of `cifar10_resnet20.py`.
"""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  return cifar10_resnet20.get_config(model="resnet20_prospr", dataset="cifar100")
