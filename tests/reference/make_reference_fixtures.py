"""Reference scores and masks from the pruning methods' authors' own PyTorch code.

Run by hand, never in CI (CI never installs torch). It writes `cnn.npz` and `mlp.npz` next to
this file; `tests/test_reference_fixtures.py` rebuilds both models in JAX from the weights and
batches stored in them and checks prospr_jax against the authors' scores and masks.

How to run (the numbers in the fixtures came from torch 2.13.0 CPU, numpy 2.4, float64):

    python -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch numpy tqdm   # tqdm: Synaptic-Flow's prune.py imports it
    mkdir /tmp/ref && cd /tmp/ref
    git clone https://github.com/mil-ad/prospr            # then, in each clone,
    git clone https://github.com/ganguli-lab/Synaptic-Flow   # `git checkout <commit>` below
    git clone https://github.com/alecwangcq/GraSP
    git clone https://github.com/naver/force
    /tmp/torchvenv/bin/python tests/reference/make_reference_fixtures.py --ref_dir /tmp/ref

Upstream code used (the `UPSTREAM` commits, checked when a clone has a `.git`):
  mil-ad/prospr              a92177989f4480f1f2b43a48b3e18a6597ebba6d
      prospr/prospr.py, prospr/utils.py
  ganguli-lab/Synaptic-Flow  9dfa57aa4012c34028ee646d367f18e32f0e3bc7
      Pruners/pruners.py, prune.py, Layers/layers.py, Utils/generator.py
  alecwangcq/GraSP           f17d87ac537bfce476ac2424171a8b6eb56499db
      pruner/GraSP.py
  naver/force                7494eed332b0494c283d6f3a2ed7a033895a6ccb
      pruning/pruning_algos.py, pruning/mask_networks.py

Settings (all float64 via `torch.set_default_dtype`), chosen so that prospr_jax and the authors'
code compute the same thing; every remaining difference is listed in `docs/methods.md`:
  * SNIP, GraSP, SynFlow (Synaptic-Flow `prune_loop`, its default BatchNorm eval mode, global
    scope, exponential schedule): SNIP and GraSP one round on batches 0 and 1; SynFlow
    `SYNFLOW_ROUNDS` rounds. Their SNIP scores are divided by their sum, GraSP's by
    `|sum| + 1e-10` (as stored).
  * GraSP (alecwangcq `GraSP`, the model in train mode as in its `main_prune_non_imagenet.py`):
    `T=200`, `reinit=False` (theirs re-draws the Linear weights with Xavier before scoring),
    `samples_per_class=2` taken by their `GraSP_fetch_data` from batches 0..3 and split in two
    halves (stored as `grasp/half/*`). The stored scores are theirs, `-θ⊙Hg / (|Σ| + 1e-10)`.
  * iterative SNIP (`prune_method=1`) and FORCE (`prune_method=3`) (naver/force
    `iterative_pruning`, train mode, `mode='exp'`, `num_batches=2`): the model ends with a
    `LogSoftmax`, so their `nll_loss` is the cross-entropy (their models give raw logits to
    `nll_loss`), and the loader hands out batches 0 and 1 in every round (theirs draws a fresh
    shuffled batch per `next(iter(loader))`).
  * ProsPr (mil-ad `prospr.prune`, train mode): 3 inner SGD steps of learning rate 0.1,
    momentum 0 (`prospr`, `prospr_first_order`, `prospr_same_batch` with
    `new_data_in_inner=False`, their CLI default) and, on the MLP, momentum 0.9
    (`prospr_momentum`, which shows their detached first momentum buffer).
  * Sparsities are chosen so that the authors' kept counts (their rounding) equal prospr_jax's
    `round((1 - s) * n)` in every round of the iterative methods; the one-shot masks are
    compared at the authors' kept count.

Keys of each npz: `weights/<torch name>` (torch layout: OIHW, [out, in]), `batch/<i>/image`
(NCHW, float32-representable) and `batch/<i>/label`; per fixture `<fixture>/score/<layer>`,
`<fixture>/mask/<layer>`, `<fixture>/round/<t>/mask/<layer>` (iterative methods, t = 1..T),
`<fixture>/score/<layer>` of the last round, and its settings (`<fixture>/sparsity`, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import pathlib
import subprocess
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

UPSTREAM = {  # clone directory under --ref_dir: (GitHub repository, commit)
    "prospr": ("mil-ad/prospr", "a92177989f4480f1f2b43a48b3e18a6597ebba6d"),
    "Synaptic-Flow": ("ganguli-lab/Synaptic-Flow", "9dfa57aa4012c34028ee646d367f18e32f0e3bc7"),
    "GraSP": ("alecwangcq/GraSP", "f17d87ac537bfce476ac2424171a8b6eb56499db"),
    "force": ("naver/force", "7494eed332b0494c283d6f3a2ed7a033895a6ccb"),
}
NUM_CLASSES = 3
NUM_BATCHES = 4
SYNFLOW_ROUNDS = 4
GRADUAL_ROUNDS = 4
PROSPR_STEPS = 3
PROSPR_LR = 0.1
GRASP_SAMPLES_PER_CLASS = 2
Batch = tuple[torch.Tensor, torch.Tensor]


class CNN(nn.Module):
  """conv1 3x3 (no bias) -> bn1 -> relu -> conv2 3x3 -> relu -> mean pool -> fc.

  [B, 2, 8, 8] -> [B, 3] logits.
  """

  input_shape = (2, 8, 8)

  def __init__(self, layers=nn):
    super().__init__()
    self.conv1 = layers.Conv2d(2, 4, 3, padding=1, bias=False)
    self.bn1 = layers.BatchNorm2d(4)
    self.conv2 = layers.Conv2d(4, 4, 3, padding=1)
    self.fc = layers.Linear(4, NUM_CLASSES)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.conv2(x))
    return self.fc(x.mean(dim=(2, 3)))


class MLP(nn.Module):
  """fc1 -> tanh -> fc2 -> tanh -> fc3, all with biases: [B, 6] -> [B, 3]."""

  input_shape = (6,)

  def __init__(self, layers=nn):
    super().__init__()
    self.fc1 = layers.Linear(6, 8)
    self.fc2 = layers.Linear(8, 5)
    self.fc3 = layers.Linear(5, NUM_CLASSES)

  def forward(self, x):
    return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def check_upstream(ref_dir: pathlib.Path) -> None:
  """Puts the four clones on `sys.path`; fails if a git clone is not at its `UPSTREAM` commit."""
  for name, (repo, commit) in UPSTREAM.items():
    clone = ref_dir / name
    if not clone.is_dir():
      raise SystemExit(f"{clone} is missing: clone https://github.com/{repo} at {commit}.")
    if (clone / ".git").exists():
      head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
      if head != commit:
        raise SystemExit(f"{clone} is at {head}; check out {commit}.")
    sys.path.insert(0, str(clone))


def make_model(cls: type[nn.Module], weights: dict[str, torch.Tensor], layers=nn) -> nn.Module:
  """A fresh `cls(layers)` holding `weights`; Synaptic-Flow's layers add only mask buffers."""
  model = cls(layers)
  missing, unexpected = model.load_state_dict(weights, strict=False)
  assert not unexpected and all(k.endswith("_mask") for k in missing), (missing, unexpected)
  return model


def prunable(cls: type[nn.Module], weights: dict[str, torch.Tensor]) -> tuple[list[str], int]:
  """Torch names of the conv and linear weights in module order (every method's order), and
  their total size `n`."""
  names = [f"{name}.weight" for name, m in cls().named_modules()
           if isinstance(m, (nn.Conv2d, nn.Linear))]
  return names, sum(weights[k].numel() for k in names)


def layer_dict(prefix: str, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict:
  """`{f'{prefix}/{name}': array}` for the prunable layers."""
  assert len(names) == len(tensors)
  return {f"{prefix}/{n}": t.detach().cpu().numpy() for n, t in zip(names, tensors)}


def masks_dict(prefix: str, names: Sequence[str], masks: Sequence[torch.Tensor]) -> dict:
  return {k: v.astype(bool) for k, v in layer_dict(prefix, names, masks).items()}


# --- Kept counts: the authors' rounding rules and prospr_jax's. -----------------------------

def ours_kept(sparsity: float, n: int) -> int:
  """prospr_jax `masks.num_kept`."""
  return int(round((1.0 - sparsity) * n))


def ours_schedule(sparsity: float, rounds: int) -> list[float]:
  """prospr_jax `snip.kept_fraction_schedule` (sparsity after each round)."""
  return [1.0 - (1.0 - sparsity) ** (t / rounds) for t in range(1, rounds + 1)]


def synaptic_flow_kept(density: float, rounds: int, n: int) -> list[int]:
  """Synaptic-Flow `prune_loop` + `_global_mask`: removes `int((1 - d^(t/T)) n)` (no ties)."""
  return [n - int((1.0 - density ** ((t + 1) / rounds)) * n) for t in range(rounds)]


def naver_force_steps(density: float, rounds: int) -> list[float]:
  """naver/force `iterative_pruning`'s `pruning_steps` for `mode='exp'` (kept fractions)."""
  return [np.exp(0 - ((x + 1) * (0 - np.log(density)) / rounds)) for x in range(rounds)]


def naver_force_kept(density: float, rounds: int, n: int) -> list[int]:
  """naver/force `get_mask` on those steps: keeps `int(n * d^(t/T))` (no ties)."""
  return [int(n * p) for p in naver_force_steps(density, rounds)]


def matching_sparsity(authors_kept: Callable[[float, int, int], list[int]], rounds: int,
                      n: int, start: float) -> float:
  """The first sparsity from `start` (steps of 0.005) where the authors' kept count equals
  prospr_jax's in every round."""
  for s in np.arange(start, 0.99, 0.005):
    s = float(round(s, 3))
    if authors_kept(1.0 - s, rounds, n) == [ours_kept(x, n) for x in ours_schedule(s, rounds)]:
      return s
  raise ValueError("no matching sparsity")


def count_masks(masks: Sequence[torch.Tensor]) -> int:
  return int(sum(int(m.sum()) for m in masks))


# --- Synaptic-Flow: SNIP, GraSP, SynFlow. ---------------------------------------------------

def synaptic_flow(cls, weights, batches: list[Batch], pruner_name: str, sparsity: float,
                  rounds: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
  """Runs Synaptic-Flow's `prune_loop` with its defaults (eval mode, global, exponential).

  Returns the last round's scores and the masks after every round (prunable-layer order).
  """
  from Layers import layers  # pylint: disable=import-outside-toplevel
  from Pruners import pruners  # pylint: disable=import-outside-toplevel
  from Utils import generator  # pylint: disable=import-outside-toplevel
  import prune as sf_prune  # pylint: disable=import-outside-toplevel

  model = make_model(cls, weights, layers)
  pruner = getattr(pruners, pruner_name)(generator.masked_parameters(model))
  round_masks, last_scores = [], []
  mask = pruner.mask

  def recording_mask(sparse, scope):
    last_scores[:] = [pruner.scores[id(p)].clone() for _, p in pruner.masked_parameters]
    mask(sparse, scope)
    round_masks.append([m.clone() for m, _ in pruner.masked_parameters])

  pruner.mask = recording_mask
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    sf_prune.prune_loop(model, nn.CrossEntropyLoss(), pruner, batches, "cpu", 1.0 - sparsity,
                        "exponential", "global", rounds)
  return last_scores, round_masks


def synaptic_flow_fixtures(cls, weights, batches) -> dict:
  names, n = prunable(cls, weights)
  out = {}
  for fixture, pruner_name, rounds, start in [("snip", "SNIP", 1, 0.6),
                                              ("grasp_sf", "GraSP", 1, 0.6),
                                              ("synflow", "SynFlow", SYNFLOW_ROUNDS, 0.8)]:
    s = matching_sparsity(synaptic_flow_kept, rounds, n, start)
    scores, round_masks = synaptic_flow(cls, weights, batches[:2], pruner_name, s, rounds)
    assert [count_masks(m) for m in round_masks] == synaptic_flow_kept(1.0 - s, rounds, n)
    out.update(layer_dict(f"{fixture}/score", names, scores))
    for t, masks in enumerate(round_masks, 1):
      out.update(masks_dict(f"{fixture}/round/{t}/mask", names, masks))
    out[f"{fixture}/sparsity"] = np.float64(s)
    out[f"{fixture}/rounds"] = np.int64(rounds)
    out[f"{fixture}/batches"] = np.arange(2)  # SynFlow reads only the input shape
  # SynFlow's first round scores the dense network.
  scores, _ = synaptic_flow(cls, weights, batches[:1], "SynFlow", out["synflow/sparsity"], 1)
  out.update(layer_dict("synflow/first_score", names, scores))
  return out


# --- alecwangcq/GraSP. ----------------------------------------------------------------------

class _RecordingTorch:
  """`torch`, except that `topk` records its input (GraSP's normalized score vector)."""

  def __init__(self):
    self.topk_inputs = []

  def __getattr__(self, name):
    return getattr(torch, name)

  def topk(self, x, *args, **kwargs):
    self.topk_inputs.append(x.detach().clone())
    return torch.topk(x, *args, **kwargs)


def grasp_authors_fixture(cls, weights, batches) -> dict:
  from pruner import GraSP as grasp_module  # pylint: disable=import-outside-toplevel

  names, n = prunable(cls, weights)
  model = make_model(cls, weights)
  model.train()  # as a fresh model in their main_prune_non_imagenet.py
  x, y = grasp_module.GraSP_fetch_data(batches, NUM_CLASSES, GRASP_SAMPLES_PER_CLASS)
  half = x.shape[0] // 2
  recorder = _RecordingTorch()
  grasp_module.torch = recorder
  s = 0.6
  with contextlib.redirect_stdout(io.StringIO()):
    keep = grasp_module.GraSP(model, s, batches, "cpu", num_classes=NUM_CLASSES,
                              samples_per_class=GRASP_SAMPLES_PER_CLASS, num_iters=1, T=200,
                              reinit=False)
  grasp_module.torch = torch
  (flat,) = recorder.topk_inputs
  masks = [keep[m] for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
  assert count_masks(masks) == n - int(n * s) + 1  # keeps `<= the int(n s)-th largest`
  sizes = [weights[k].numel() for k in names]
  out = layer_dict("grasp/score", names,
                   [t.reshape(weights[k].shape) for t, k in zip(flat.split(sizes), names)])
  out.update(masks_dict("grasp/mask", names, masks))
  out["grasp/sparsity"] = np.float64(s)
  for i, (xi, yi) in enumerate([(x[:half], y[:half]), (x[half:], y[half:])]):
    out[f"grasp/half/{i}/image"] = xi.numpy().astype(np.float32)
    out[f"grasp/half/{i}/label"] = yi.numpy()
  return out


# --- naver/force: iterative SNIP and FORCE. -------------------------------------------------

class FreshIterLoader:
  """naver/force reads each batch as `next(iter(loader))`; every `iter` here starts at the next
  of `batches`, cyclically, so each round sees the same `len(batches)` batches."""

  def __init__(self, batches: list[Batch]):
    self.batches, self.calls = batches, 0

  def __len__(self):
    return len(self.batches)

  def __iter__(self):
    batch = self.batches[self.calls % len(self.batches)]
    self.calls += 1
    return iter([batch])


def naver_force_fixtures(cls, weights, batches) -> dict:
  from pruning import pruning_algos  # pylint: disable=import-outside-toplevel

  names, n = prunable(cls, weights)
  s = matching_sparsity(naver_force_kept, GRADUAL_ROUNDS, n, 0.7)
  out = {}
  for fixture, prune_method in [("iterative_snip", 1), ("force", 3)]:
    recorded = []
    get_mask = pruning_algos.get_mask

    def recording_get_mask(saliency, perc, get_mask=get_mask, recorded=recorded):
      recorded.append([t.clone() for t in saliency])
      return get_mask(saliency, perc)

    pruning_algos.get_mask = recording_get_mask
    model = nn.Sequential(make_model(cls, weights), nn.LogSoftmax(dim=1))  # nll_loss = CE
    with contextlib.redirect_stdout(io.StringIO()):
      masks = pruning_algos.iterative_pruning(
          model, FreshIterLoader(batches[:2]), "cpu", pruning_factor=1.0 - s,
          prune_method=prune_method, num_steps=GRADUAL_ROUNDS, mode="exp", num_batches=2)
    pruning_algos.get_mask = get_mask
    # The masks of every round: recompute with their get_mask from the recorded saliencies.
    round_masks = [get_mask(sal, p)
                   for sal, p in zip(recorded, naver_force_steps(1.0 - s, GRADUAL_ROUNDS))]
    assert all(torch.equal(a, b) for a, b in zip(round_masks[-1], masks))
    assert [count_masks(m) for m in round_masks] == naver_force_kept(1.0 - s, GRADUAL_ROUNDS, n)
    out.update(layer_dict(f"{fixture}/score", names, recorded[-1]))
    for t, m in enumerate(round_masks, 1):
      out.update(masks_dict(f"{fixture}/round/{t}/mask", names, m))
    out[f"{fixture}/sparsity"] = np.float64(s)
    out[f"{fixture}/rounds"] = np.int64(GRADUAL_ROUNDS)
    out[f"{fixture}/batches"] = np.arange(2)
  return out


# --- mil-ad/prospr. -------------------------------------------------------------------------

def prospr_fixtures(cls, weights, batches) -> dict:
  import prospr  # pylint: disable=import-outside-toplevel
  from prospr import utils as prospr_utils  # pylint: disable=import-outside-toplevel

  names, n = prunable(cls, weights)
  filter_fn = prospr_utils.pruning_filter_factory(NUM_CLASSES, structured=False)
  s = 0.7
  out = {}
  variants = [("prospr", "full", True, 0.0), ("prospr_first_order", "first_order", True, 0.0),
              ("prospr_same_batch", "full", False, 0.0)]
  if cls is MLP:  # their momentum bug, shown once
    variants.append(("prospr_momentum", "full", True, 0.9))
  for fixture, method, new_data, momentum in variants:
    data = batches[:PROSPR_STEPS + 1] if new_data else batches[:1]
    args = (make_model(cls, weights), s, data, filter_fn, PROSPR_STEPS, PROSPR_LR, momentum)
    with contextlib.redirect_stdout(io.StringIO()):  # `prune` scores a copy of the model
      scores = prospr.prune(*args, method=method, new_data_in_inner=new_data,
                            return_scores=True)
      _, masks = prospr.prune(*args, method=method, new_data_in_inner=new_data)
    assert count_masks(masks) == math.ceil(n * (1 - s))
    out.update(layer_dict(f"{fixture}/score", names, scores))
    out.update(masks_dict(f"{fixture}/mask", names, masks))
    out[f"{fixture}/sparsity"] = np.float64(s)
    out[f"{fixture}/batches"] = np.arange(len(data))
    out[f"{fixture}/momentum"] = np.float64(momentum)
  out["prospr/lr"] = np.float64(PROSPR_LR)
  out["prospr/steps"] = np.int64(PROSPR_STEPS)
  return out


# --- Models, data, and the files. -----------------------------------------------------------

def init_weights(cls: type[nn.Module], seed: int) -> dict[str, torch.Tensor]:
  """torch's default init, BatchNorm scale and shift perturbed so that they matter."""
  torch.manual_seed(seed)
  model = cls()
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.copy_(1.0 + 0.3 * torch.randn_like(m.weight))
        m.bias.copy_(0.2 * torch.randn_like(m.bias))
  return {k: v.detach().clone() for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked")}


def make_batches(input_shape: Sequence[int], batch_size: int, seed: int) -> list[Batch]:
  """`NUM_BATCHES` batches; images are float32 values (stored exactly as float32)."""
  gen = torch.Generator().manual_seed(seed)
  return [(torch.randn(batch_size, *input_shape, generator=gen, dtype=torch.float32).double(),
           torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen))
          for _ in range(NUM_BATCHES)]


def write_fixture(path: pathlib.Path, cls: type[nn.Module], seed: int, batch_size: int) -> None:
  weights = init_weights(cls, seed)
  batches = make_batches(cls.input_shape, batch_size, seed + 1)
  out = {f"weights/{k}": v.numpy() for k, v in weights.items()}
  for i, (x, y) in enumerate(batches):
    out[f"batch/{i}/image"] = x.numpy().astype(np.float32)
    out[f"batch/{i}/label"] = y.numpy()
  for name, (repo, commit) in UPSTREAM.items():
    out[f"upstream/{name}"] = np.array(f"{repo}@{commit}")
  for make in (synaptic_flow_fixtures, grasp_authors_fixture, naver_force_fixtures,
               prospr_fixtures):
    out.update(make(cls, weights, batches))
  np.savez_compressed(path, **out)
  print(f"{path}: {path.stat().st_size / 1024:.1f} kB, {len(out)} arrays")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref_dir", type=pathlib.Path, required=True,
                      help="directory holding the clones named in UPSTREAM")
  args = parser.parse_args()
  check_upstream(args.ref_dir)
  torch.set_default_dtype(torch.float64)
  here = pathlib.Path(__file__).resolve().parent
  write_fixture(here / "cnn.npz", CNN, seed=0, batch_size=6)
  write_fixture(here / "mlp.npz", MLP, seed=1, batch_size=8)


if __name__ == "__main__":
  main()
