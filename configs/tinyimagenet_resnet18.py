"""ProsPr paper setting: the authors' small-input ResNet-18 (`resnet18_prospr`) on Tiny-ImageNet.

Tiny-ImageNet: 64x64 images, 200 classes.

tfds has no Tiny-ImageNet builder: prepare one under the name `tiny_imagenet` in
`config.data_dir` (features 'image' and 'label'), or point `config.dataset` at your own.
"""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  return cifar10_resnet20.get_config(model="resnet18_prospr", dataset="tiny_imagenet")
