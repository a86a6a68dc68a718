"""Every config file loads and names a known model, data set and pruning method."""

import importlib
import pathlib

import pytest

import prospr_jax as pj
from prospr_jax import models

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_consistent(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.model in models.MODEL_NAMES
  assert config.prune.method in set(pj.METHODS) | {"dense"}
  assert 0 <= config.prune.sparsity < 1
  assert config.train.batch_size > 0 and config.train.num_epochs > 0


def test_paper_configs_follow_the_paper_protocol():
  config = importlib.import_module("configs.cifar10_vgg16").get_config()
  assert (config.model, config.dataset) == ("vgg16_prospr", "cifar10")
  assert config.train.num_epochs == 200 and config.train.batch_size == 256
  assert config.train.lr_schedule == "step" and tuple(config.train.lr_decay_fractions) == (0.5, 0.75)
