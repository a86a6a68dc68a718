"""Reference scores and masks of NTK-SAP and PX from their authors' own PyTorch code.

Run by hand, never in CI (CI never installs torch). It writes `ntk_sap_px.npz` next to this
file; `tests/test_ntk_sap_px.py` rebuilds the models in JAX from the weights, draws and batches
stored in it and checks `prospr_jax.saliency.ntk_sap` and `.px` against the authors' scores
(every round) and masks (every round, end to end).

How to run (the fixture came from torch 2.13.0 CPU, numpy 2.4, float64):

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy tqdm
    mkdir /tmp/ref && cd /tmp/ref
    git clone https://github.com/YiteWang/NTK-SAP            # then `git checkout <commit>`
    git clone https://github.com/iurada/px-ntk-pruning       # of UPSTREAM in each
    OMP_NUM_THREADS=1 /tmp/torchvenv/bin/python tests/reference/make_ntk_sap_px_fixtures.py \
        --ref_dir /tmp/ref

Upstream code used (the `UPSTREAM` commits, checked when a clone has a `.git`):
  YiteWang/NTK-SAP          Pruners/pruners.py (`NTKSAP`), prune.py (`prune_loop`),
                            Layers/layers.py, Utils/generator.py
  iurada/px-ntk-pruning     lib/pruners.py (`PX`, its `Pruner._global_mask`), lib/layers.py,
                            lib/generator.py, globals.py; the round loop of
                            train_classification.py's `Experiment.__init__` is restated here

Only the randomness is patched, so that both sides use the same draws (float64):
  * NTK-SAP: `model._initialize_weights` (which their `NTKSAP.score` calls before each draw)
    copies the next stored kaiming-normal weights into the conv and linear weights and sets
    BatchNorm's scale and shift to 1 and 0, as the authors' models' own method does;
    `torch.randn_like` (the noise input, then one perturbation per masked weight) returns the
    next stored array. Their `prune_loop` runs in train mode (`--prune-train-mode True`, their
    `scripts/run.sh`), exponential schedule, global scope. The models start with BatchNorm
    scale 1 and shift 0 (their values at initialization; see docs/methods.md for why).
  * PX: deterministic given the data. `CONFIG` holds `dataset='CIFAR10'`,
    `examples_per_class=2`, `batch_size=4`; the dataset has 3 examples per class, so their
    class-balanced subset gives a batch of 4 and a batch of 2 (stored as `px/batch/<i>`). The
    model is set to eval mode before the rounds, as `Experiment.__init__` does.
The models: the CNN of `make_reference_fixtures.py` (conv1 -> bn1 -> relu -> conv2 -> relu ->
mean -> fc; PX's parameter-name rules see 'bn1' and 'fc') and a ReLU MLP (lin1 -> relu -> lin2
-> relu -> fc). Sparsities are chosen so that the authors' kept counts (`int` rounding of the
pruned count) equal prospr_jax's `round((1 - s) * n)` in every round.

Keys of the npz, per model `<m>` in ('cnn', 'mlp'): `<m>/weights/<torch name>` (torch layout:
OIHW, [out, in]); for `<f>` in ('ntk_sap', 'px'): `<m>/<f>/round/<t>/score/<layer>` and
`<m>/<f>/round/<t>/mask/<layer>` (t = 1..T; a round's scores are taken at the previous round's
masks), `<m>/<f>/sparsity`, `<m>/<f>/rounds`; NTK-SAP's draws `<m>/ntk_sap/round/<t>/weight/
<layer>` `[S, ...]`, `.../input` `[S, B, ...]` (NCHW), `.../delta/<layer>` `[S, ...]` and
`<m>/ntk_sap/epsilon`; PX's batches `<m>/px/batch/<i>` (NCHW).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import pathlib
import sys
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import make_reference_fixtures as ref

UPSTREAM = {  # clone directory under --ref_dir: (GitHub repository, commit)
    "NTK-SAP": ("YiteWang/NTK-SAP", "e23682bc8798795107961af1afb236d349bf5c00"),
    "px-ntk-pruning": ("iurada/px-ntk-pruning", "ed6c40ea576e4651d6665b3a45741f6eb67ceef8"),
}
ROUNDS = 3
NTK_SAP_SAMPLES = 2  # R, weight re-draws per round
NTK_SAP_BATCH = 4  # noise inputs per draw (one batch)
NTK_SAP_EPSILON = 0.01
PX_EXAMPLES_PER_CLASS = 2
PX_BATCH_SIZE = 4
PX_EXAMPLES = 3 * ref.NUM_CLASSES


class ReluMLP(nn.Module):
  """lin1 -> relu -> lin2 -> relu -> fc, all with biases: [B, 6] -> [B, 3]."""

  input_shape = (6,)

  def __init__(self, layers=nn):
    super().__init__()
    self.lin1 = layers.Linear(6, 8)
    self.lin2 = layers.Linear(8, 5)
    self.fc = layers.Linear(5, ref.NUM_CLASSES)

  def forward(self, x):
    return self.fc(F.relu(self.lin2(F.relu(self.lin1(x)))))


MODELS = {"cnn": (ref.CNN, 0), "mlp": (ReluMLP, 1)}  # name: (class, seed)


@contextlib.contextmanager
def replayed_randn_like(queue: list[torch.Tensor]) -> Iterator[None]:
  """`torch.randn_like(t)` returns the next array of `queue` (checked against `t`'s shape)."""
  original = torch.randn_like

  def randn_like(t, *args, **kwargs):
    drawn = queue.pop(0)
    assert drawn.shape == t.shape, (drawn.shape, t.shape)
    return drawn.clone()

  torch.randn_like = randn_like
  try:
    yield
  finally:
    torch.randn_like = original


def kaiming_draw(weights: dict[str, torch.Tensor], names: list[str],
                 gen: torch.Generator) -> list[torch.Tensor]:
  """`kaiming_normal_` (fan-in, gain sqrt(2)) draws for the weights `names`."""
  return [torch.randn(weights[k].shape, generator=gen) * math.sqrt(2.0 / weights[k][0].numel())
          for k in names]


def recording_rounds(pruner) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
  """Wraps `pruner.mask` to record `(scores, masks after)` of every round."""
  rounds = []
  mask = pruner.mask

  def recording_mask(sparse, scope):
    scores = [pruner.scores[id(p)].clone() for _, p in pruner.masked_parameters]
    mask(sparse, scope)
    rounds.append((scores, [m.detach().clone() for m, _ in pruner.masked_parameters]))

  pruner.mask = recording_mask
  return rounds


def rounds_dict(prefix: str, names: list[str], rounds, n: int, sparsity: float) -> dict:
  assert [ref.count_masks(m) for _, m in rounds] == ref.synaptic_flow_kept(
      1.0 - sparsity, ROUNDS, n)
  out = {f"{prefix}/sparsity": np.float64(sparsity), f"{prefix}/rounds": np.int64(ROUNDS)}
  for t, (scores, masks) in enumerate(rounds, 1):
    out.update(ref.layer_dict(f"{prefix}/round/{t}/score", names, scores))
    out.update(ref.masks_dict(f"{prefix}/round/{t}/mask", names, masks))
  return out


def ntk_sap_fixture(cls, weights: dict[str, torch.Tensor], seed: int) -> dict:
  """YiteWang/NTK-SAP `prune_loop` with `NTKSAP`, replaying stored draws."""
  from Layers import layers  # pylint: disable=import-outside-toplevel
  from Pruners import pruners  # pylint: disable=import-outside-toplevel
  from Utils import generator  # pylint: disable=import-outside-toplevel
  import prune as ntk_prune  # pylint: disable=import-outside-toplevel

  names, n = ref.prunable(cls, weights)
  sparsity = ref.matching_sparsity(ref.synaptic_flow_kept, ROUNDS, n, 0.6)
  gen = torch.Generator().manual_seed(seed + 100)
  out, redraws, noise = {}, [], []
  for t in range(1, ROUNDS + 1):
    draws = []
    for _ in range(NTK_SAP_SAMPLES):
      kernels = kaiming_draw(weights, names, gen)
      x = torch.randn(NTK_SAP_BATCH, *cls.input_shape, generator=gen)
      deltas = [torch.randn(weights[k].shape, generator=gen) for k in names]
      draws.append((kernels, x, deltas))
      redraws.append(kernels)
      noise.extend([x, *deltas])
    prefix = f"ntk_sap/round/{t}"
    for i, k in enumerate(names):
      out[f"{prefix}/weight/{k}"] = torch.stack([d[0][i] for d in draws]).numpy()
      out[f"{prefix}/delta/{k}"] = torch.stack([d[2][i] for d in draws]).numpy()
    out[f"{prefix}/input"] = torch.stack([d[1] for d in draws]).numpy()

  model = ref.make_model(cls, weights, layers)

  def initialize_weights():
    kernels = redraws.pop(0)
    with torch.no_grad():
      for k, w in zip(names, kernels):
        model.get_parameter(k).copy_(w)
      for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.weight.fill_(1.0)
          m.bias.fill_(0.0)

  model._initialize_weights = initialize_weights  # pylint: disable=protected-access
  pruner = pruners.NTKSAP(generator.masked_parameters(model), ntksap_epsilon=NTK_SAP_EPSILON,
                          ntksap_R=NTK_SAP_SAMPLES)
  rounds = recording_rounds(pruner)
  loader = [(torch.zeros(NTK_SAP_BATCH, *cls.input_shape), torch.zeros(NTK_SAP_BATCH))]
  with replayed_randn_like(noise), contextlib.redirect_stderr(io.StringIO()):
    ntk_prune.prune_loop(model, nn.CrossEntropyLoss(), pruner, loader, "cpu", 1.0 - sparsity,
                         "exponential", "global", ROUNDS, train_mode=True)
  assert not redraws and not noise, "unused draws"
  out.update(rounds_dict("ntk_sap", names, rounds, n, sparsity))
  out["ntk_sap/epsilon"] = np.float64(NTK_SAP_EPSILON)
  return out


class LabeledImages(torch.utils.data.TensorDataset):
  """A `TensorDataset` of (image, label) with the `targets` PX's balanced subset reads."""

  def __init__(self, images: torch.Tensor, labels: torch.Tensor):
    super().__init__(images, labels)
    self.targets = labels.tolist()


def px_fixture(cls, weights: dict[str, torch.Tensor], seed: int) -> dict:
  """iurada/px-ntk-pruning `PX` in the round loop of its `Experiment.__init__`."""
  from globals import CONFIG  # pylint: disable=import-outside-toplevel
  import lib.layers as px_layers  # pylint: disable=import-outside-toplevel
  from lib import pruners as px_pruners  # pylint: disable=import-outside-toplevel
  from lib.generator import masked_parameters  # pylint: disable=import-outside-toplevel

  CONFIG.update(dataset="CIFAR10", batch_size=PX_BATCH_SIZE,
                experiment_args={"examples_per_class": PX_EXAMPLES_PER_CLASS})
  gen = torch.Generator().manual_seed(seed + 200)
  images = torch.randn(PX_EXAMPLES, *cls.input_shape, generator=gen)
  labels = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2])
  dataset = LabeledImages(images, labels)
  names, n = ref.prunable(cls, weights)
  sparsity = ref.matching_sparsity(ref.synaptic_flow_kept, ROUNDS, n, 0.6)

  model = ref.make_model(cls, weights, px_layers)
  pruner = px_pruners.PX(masked_parameters(model))
  rounds = recording_rounds(pruner)
  used = torch.utils.data.DataLoader(
      pruner.get_balanced_subset(dataset, PX_EXAMPLES_PER_CLASS), batch_size=PX_BATCH_SIZE)
  out = {f"px/batch/{i}": x.numpy() for i, (x, _) in enumerate(used)}
  model.eval()
  with contextlib.redirect_stderr(io.StringIO()):
    for t in range(ROUNDS):
      pruner.score(model, nn.CrossEntropyLoss(),
                   torch.utils.data.DataLoader(dataset, batch_size=PX_BATCH_SIZE), "cpu")
      pruner.mask((1.0 - sparsity) ** ((t + 1) / ROUNDS), "global")
  out.update(rounds_dict("px", names, rounds, n, sparsity))
  return out


def check_upstream(ref_dir: pathlib.Path) -> None:
  """`make_reference_fixtures.check_upstream` for this script's `UPSTREAM`."""
  saved = ref.UPSTREAM
  ref.UPSTREAM = UPSTREAM
  try:
    ref.check_upstream(ref_dir)
  finally:
    ref.UPSTREAM = saved


def model_fixture(name: str) -> dict:
  cls, seed = MODELS[name]
  weights = ref.init_weights(cls, seed)
  ntk_weights = copy.deepcopy(weights)  # BatchNorm at its initial scale 1 and shift 0
  for k in ntk_weights:
    if k.startswith("bn") and k.endswith(("weight", "bias")):
      ntk_weights[k].fill_(1.0 if k.endswith("weight") else 0.0)
  out = {f"weights/{k}": v.numpy() for k, v in weights.items()}
  out.update({f"ntk_sap_weights/{k}": v.numpy() for k, v in ntk_weights.items()})
  out.update(ntk_sap_fixture(cls, ntk_weights, seed))
  out.update(px_fixture(cls, weights, seed))
  return {f"{name}/{k}": v for k, v in out.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref_dir", type=pathlib.Path, required=True,
                      help="directory holding the clones named in UPSTREAM")
  args = parser.parse_args()
  check_upstream(args.ref_dir)
  torch.set_default_dtype(torch.float64)
  out = {f"upstream/{k}": np.array(f"{repo}@{commit}") for k, (repo, commit) in UPSTREAM.items()}
  for name in MODELS:
    out.update(model_fixture(name))
  path = pathlib.Path(__file__).resolve().parent / "ntk_sap_px.npz"
  np.savez_compressed(path, **out)
  print(f"{path}: {path.stat().st_size / 1024:.1f} kB, {len(out)} arrays")


if __name__ == "__main__":
  sys.exit(main())
