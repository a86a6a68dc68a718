"""Writes `authors_models.json`: the ProsPr authors' PyTorch networks, for `test_paper_models.py`.

For each paper config (`configs/<name>.py`) this instantiates the network the authors' code
builds and records, in forward-call order, every Conv2d / BatchNorm2d / Linear layer (its
PyTorch name and tensor shapes), the total parameter count, the mean / std / kurtosis of every
tensor at initialization (pooled over `--init-seeds` seeds), and the logits of a forward pass
in eval mode, float64, with every tensor set by `model_fill.fill` (so the JAX test can set the
same values without the fixture storing weights).

Upstream code (not part of this repository; fetch it yourself):
  * github.com/mil-ad/prospr at commit a92177989f4480f1f2b43a48b3e18a6597ebba6d:
    `models/resnet20.py`, `models/resnet_custom.py`, `models/models.py` (`model_factory`).
  * Its VGG is torchvision's `vgg.VGG(vgg.make_layers(cfg, batch_norm=True))` (torchvision
    0.10.1 pinned by the authors). Without torchvision, pass `--torchvision-vgg` with
    `torchvision/models/vgg.py` of github.com/pytorch/vision at commit
    02196ff416e2ccfe1127d1c1a8745e47afa2fd93 (its `VGG` and `make_layers`, layers and
    `_initialize_weights`, match 0.10.1's; 0.10.1's own `vgg.py` works too): a stub
    `torchvision.models.vgg` module is built from that file.

Run (PyTorch on CPU is enough, ~2 min):
  python tests/reference/authors_models.py --prospr-dir /path/to/prospr \
      [--torchvision-vgg /path/to/vgg.py] --out tests/reference/authors_models.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import types
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import model_fill  # noqa: E402  (beside this script)

PROSPR_COMMIT = "a92177989f4480f1f2b43a48b3e18a6597ebba6d"
TORCHVISION_VGG_COMMIT = "02196ff416e2ccfe1127d1c1a8745e47afa2fd93"
BATCH = 2
KINDS = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.Linear: "linear"}


def install_torchvision_stub(vgg_py: pathlib.Path) -> None:
  """Makes `from torchvision.models import vgg` load `vgg_py` (pretrained loading stubbed out)."""
  for name in ("torchvision", "torchvision.models"):
    package = types.ModuleType(name)
    package.__path__ = []
    sys.modules[name] = package
  utils = types.ModuleType("torchvision.models.utils")
  utils.load_state_dict_from_url = None
  sys.modules["torchvision.models.utils"] = utils
  sys.modules["torchvision._internally_replaced_utils"] = utils
  spec = importlib.util.spec_from_file_location("torchvision.models.vgg", vgg_py)
  vgg = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = vgg
  spec.loader.exec_module(vgg)
  sys.modules["torchvision.models"].vgg = vgg


Builder = Callable[[], nn.Module]


def builders(prospr_dir: pathlib.Path) -> dict[str, tuple[Builder, int, tuple[int, int, int]]]:
  """`{config name: (builder, num_classes, input [C, H, W])}` with the authors' code."""
  sys.path.insert(0, str(prospr_dir))
  models = importlib.import_module("models")  # the authors' package
  resnet20 = importlib.import_module("models.resnet20")  # the module, not the function

  def factory(config: str, dataset: str) -> Builder:
    return lambda: models.model_factory(config, dataset, disable_auto_patch=False)

  cifar, tiny = (3, 32, 32), (3, 64, 64)
  return {
      "cifar10_resnet20": (factory("resnet20", "cifar10"), 10, cifar),
      # model_factory asserts CIFAR-10 for resnet20; its ResNet class with 100 outputs:
      "cifar100_resnet20": (lambda: resnet20.ResNet(resnet20.BasicBlock, [3, 3, 3], 100), 100,
                            cifar),
      "cifar10_vgg16": (factory("vgg16", "cifar10"), 10, cifar),
      "cifar100_vgg16": (factory("vgg16", "cifar100"), 100, cifar),
      "tinyimagenet_resnet18": (factory("resnet18", "tiny_imagenet"), 200, tiny),
  }


def layers_in_call_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
  """`(name, module)` of every module holding tensors, in the order `model(x)` calls them."""
  order: list[tuple[str, nn.Module]] = []
  hooks = []
  for name, module in model.named_modules():
    has_tensors = any(True for _ in module.parameters(recurse=False)) or hasattr(
        module, "running_mean")
    if has_tensors:
      if type(module) not in KINDS:
        raise TypeError(f"unexpected layer {name}: {type(module).__name__}")
      hooks.append(module.register_forward_hook(
          lambda m, i, o, name=name: order.append((name, m))))
  with torch.no_grad():
    model(x)
  for hook in hooks:
    hook.remove()
  if len({name for name, _ in order}) != len(order):
    raise ValueError("a layer is called twice")
  return order


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
  """The module's filled tensors by PyTorch name (`model_fill.ROLES`), if present."""
  return {role: t for role in model_fill.ROLES if (t := getattr(module, role, None)) is not None}


def moments(values: list[np.ndarray]) -> dict[str, float | None]:
  """Mean, std and kurtosis (E[(x - mean)^4] / std^4; None if std == 0) of all `values`."""
  x = np.concatenate([v.ravel() for v in values]).astype(np.float64)
  mean, std = float(x.mean()), float(x.std())
  kurtosis = float(np.mean((x - mean) ** 4) / std**4) if std > 0 else None
  return {"mean": round(mean, 7), "std": round(std, 7),
          "kurtosis": None if kurtosis is None else round(kurtosis, 5)}


def describe(
    build: Builder, num_classes: int, input_chw: tuple[int, ...], init_seeds: int
) -> dict:
  """Layers, parameter count, init moments and filled-forward logits of one network."""
  x = torch.from_numpy(model_fill.image((BATCH, *input_chw)))
  init_modules = []
  for seed in range(init_seeds):
    torch.manual_seed(seed)
    init_modules.append(dict(build().named_modules()))
  model = build().double().eval()  # every tensor is set by model_fill below
  order = layers_in_call_order(model, x)
  layers = []
  for index, (name, module) in enumerate(order):
    params = dict(module.named_parameters(recurse=False))
    layers.append({
        "name": name,
        "kind": KINDS[type(module)],
        "shapes": {role: list(t.shape) for role, t in tensors(module).items()},
        "init": {role: moments([modules[name].get_parameter(role).detach().numpy()
                                for modules in init_modules]) for role in params},
    })
    with torch.no_grad():
      for role, t in tensors(module).items():
        t.copy_(torch.from_numpy(model_fill.fill(tuple(t.shape), index, role)))
  with torch.no_grad():
    logits = [[float(f"{v:.12g}") for v in row] for row in model(x).tolist()]
  return {
      "num_classes": num_classes,
      "input_chw": list(input_chw),
      "num_params": sum(p.numel() for p in model.parameters()),
      "layers": layers,
      "logits": logits,
  }


def dump(fixture: dict) -> str:
  """`fixture` as JSON text with one line per layer (short lines, readable diffs)."""
  entries = []
  for name, entry in fixture["models"].items():
    fields = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entry.items() if k != "layers"]
    layers = ",\n".join(f"   {json.dumps(layer)}" for layer in entry["layers"])
    entries.append(f" {json.dumps(name)}: {{\n" + ",\n".join(fields)
                   + f',\n  "layers": [\n{layers}\n  ]}}')
  return (f'{{"source": {json.dumps(fixture["source"])},\n"models": {{\n'
          + ",\n".join(entries) + "\n}}\n")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prospr-dir", type=pathlib.Path, required=True)
  parser.add_argument("--torchvision-vgg", type=pathlib.Path)
  parser.add_argument("--init-seeds", type=int, default=4)
  parser.add_argument("--out", type=pathlib.Path, required=True)
  args = parser.parse_args()
  if args.torchvision_vgg is not None:
    install_torchvision_stub(args.torchvision_vgg)
  torch.set_num_threads(2)
  fixture = {
      "source": {"mil-ad/prospr": PROSPR_COMMIT,
                 "pytorch/vision torchvision/models/vgg.py": TORCHVISION_VGG_COMMIT,
                 "torch": torch.__version__, "init_seeds": args.init_seeds},
      "models": {name: describe(build, n, chw, args.init_seeds)
                 for name, (build, n, chw) in builders(args.prospr_dir).items()},
  }
  args.out.write_text(dump(fixture))
  for name, entry in fixture["models"].items():
    print(f"{name}: {entry['num_params']:,} params, {len(entry['layers'])} layers")


if __name__ == "__main__":
  main()
