r"""Times the authors' PyTorch ProsPr (github.com/mil-ad/prospr) on prospr_jax's settings.

  python experiments/reference_benchmark.py --plan=plan.json --output=reference.jsonl

Their code is not part of this repository: copy these files of their repository, keeping the
paths, into --ref_dir (default third_party_ref/, git-ignored): prospr/__init__.py,
prospr/prospr.py, prospr/utils.py, models/__init__.py, models/models.py, models/resnet20.py,
models/resnet_custom.py. Needs torch, and torchvision (their models package imports it).
experiments/gpu_benchmark.py and scripts/cpu_benchmark.sh write the plan and run this. It needs
no JAX and imports nothing of prospr_jax (whose package imports jax), so that it runs under a
Python with just torch and torchvision.

The plan is a JSON list of jobs, run in order:

  {"model": "resnet20_prospr", "num_classes": 10, "input_shape": [32, 32, 3], "batch_size": 128,
   "kind": "train_step"}                      # one masked training step (their training loop)
  {..., "kind": "prospr", "method": "full" | "first_order", "k": 3, "published": true}

"model" is a prospr_jax model name: the authors' networks (`resnet20_prospr`, `vgg16_prospr`,
`resnet18_prospr`) are their `model_factory(name, dataset)` (`resnet20`, `vgg16`, `resnet18`)
with the dataset named by `num_classes`; `small_convnet` is `SmallConvNet` here, a PyTorch copy
of prospr_jax's (their zoo has no such network). Models run on the GPU if there is one. ProsPr
is their `prospr.prune(..., return_scores=True)` with inner SGD lr 0.1, no momentum (the
paper's) and `k + 1` distinct random batches. As published, full mode moves the network and
data to the CPU; with `"published": false` their `prune` runs with `torch.nn.Module.cpu` made a
no-op, so it stays on the GPU. The training step is their loop's body (SGD lr 0.1, momentum
0.9, weight decay 5e-4) on the network masked by their `apply_masks_with_hooks` (90% of the
weights pruned at random). Each job runs once as a warm-up, then --repeats times; its median
wall time (after `torch.cuda.synchronize`) is written as one JSON line appended to --output as
soon as it is measured, so a run stopped by a time limit keeps what it measured. Jobs that
would start after --budget_s are written as skipped. With --repeats=0 each job runs just once,
untimed (`"run_ms": null`, `"times_ms": []`): the wall time of such a process with one `prospr`
job is the authors' eager time from process start to scores (import torch, build the network,
one call of their `prune`), which experiments/cold_start_benchmark.py measures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import statistics
import sys
import time
import unittest.mock
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

DATASETS = {10: "cifar10", 100: "cifar100", 200: "tiny_imagenet", 1000: "imagenet"}
"""Their dataset names by number of classes (their `model_factory` takes a dataset name)."""
INNER_LR = 0.1
TRAIN_HPARAMS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
SPARSITY = 0.9


def load_reference(ref_dir: pathlib.Path) -> tuple[Any, Any, Callable[..., torch.nn.Module]]:
  """Their `prospr` package, `prospr.utils` and `models.model_factory`, imported from `ref_dir`."""
  missing = [p for p in ("prospr/prospr.py", "prospr/utils.py", "models/models.py")
             if not (ref_dir / p).is_file()]
  if missing:
    raise FileNotFoundError(f"{ref_dir} lacks {missing}: copy in the authors' files (see --help).")
  sys.path.insert(0, str(ref_dir.resolve()))
  import models  # pylint: disable=g-import-not-at-top
  import prospr
  import prospr.utils
  return prospr, prospr.utils, models.model_factory


class SmallConvNet(torch.nn.Sequential):
  """prospr_jax.models.SmallConvNet in PyTorch: 3x3 conv-BN-ReLU blocks (bias-free convs,
  padding 1) 16, max-pool 2, 32, max-pool 2, 64, 64, global average pool, linear head."""

  def __init__(self, in_channels: int, num_classes: int):
    layers: list[torch.nn.Module] = []
    for width in (16, "M", 32, "M", 64, 64):
      if width == "M":
        layers.append(torch.nn.MaxPool2d(2))
        continue
      layers += [torch.nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                 torch.nn.BatchNorm2d(width), torch.nn.ReLU()]
      in_channels = width
    super().__init__(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                     torch.nn.Linear(in_channels, num_classes))


AUTHORS_MODELS = {"resnet20_prospr": "resnet20", "vgg16_prospr": "vgg16",
                  "resnet18_prospr": "resnet18"}
"""prospr_jax's names of the authors' networks -> the names of their `model_factory`."""


def make_model(job: dict[str, Any], model_factory: Callable[..., torch.nn.Module],
               dev: torch.device) -> torch.nn.Module:
  """The job's network (a prospr_jax model name) on `dev`: `SmallConvNet` or the authors'."""
  if job["model"] == "small_convnet":
    net = SmallConvNet(job["input_shape"][-1], job["num_classes"])
  elif job["model"] in AUTHORS_MODELS:
    net = model_factory(AUTHORS_MODELS[job["model"]], DATASETS[job["num_classes"]], False)
  else:
    raise ValueError(f"No reference network for model {job['model']!r}: the authors' code has "
                     f"{sorted(AUTHORS_MODELS)} (prospr_jax names) and small_convnet is copied.")
  return net.to(dev)


def device() -> torch.device:
  """The first GPU, else the CPU."""
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_batches(job: dict[str, Any], count: int, dev: torch.device) -> list[tuple]:
  """`count` (NCHW standard-normal images, integer labels) pairs on `dev`."""
  h, w, c = job["input_shape"]
  return [(torch.randn(job["batch_size"], c, h, w, device=dev),
           torch.randint(0, job["num_classes"], (job["batch_size"],), device=dev))
          for _ in range(count)]


@contextlib.contextmanager
def kept_on_device(keep: bool) -> Iterator[None]:
  """With `keep`, `torch.nn.Module.cpu` is a no-op: their full mode then stays on the GPU."""
  if not keep:
    yield
    return
  with unittest.mock.patch.object(torch.nn.Module, "cpu", lambda self: self):
    yield


def prospr_call(job: dict[str, Any], ref: tuple, dev: torch.device) -> Callable[[], Any]:
  """A call of their `prune` on a fresh network for a `kind: prospr` job."""
  prospr, utils, model_factory = ref
  net = make_model(job, model_factory, dev)
  batches = random_batches(job, job["k"] + 1, dev)
  filter_fn = utils.pruning_filter_factory(job["num_classes"], False)

  def call():
    with contextlib.redirect_stdout(io.StringIO()), kept_on_device(not job["published"]):
      return prospr.prune(net, SPARSITY, batches, filter_fn, job["k"], INNER_LR, 0.0,
                          method=job["method"], return_scores=True)

  return call


def train_step_call(job: dict[str, Any], ref: tuple, dev: torch.device) -> Callable[[], Any]:
  """One step of their training loop on a randomly masked network (`kind: train_step`)."""
  _, utils, model_factory = ref
  net = make_model(job, model_factory, dev)
  filter_fn = utils.pruning_filter_factory(job["num_classes"], False)
  keep_masks = [torch.rand_like(m.weight) >= SPARSITY
                for m in filter(filter_fn, net.modules())]
  net = utils.apply_masks_with_hooks(net, [m.float() for m in keep_masks], False, filter_fn)
  net.train()
  optimizer = torch.optim.SGD(net.parameters(), **TRAIN_HPARAMS)
  x, y = random_batches(job, 1, dev)[0]

  def call():
    optimizer.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    return loss

  return call


def timed_ms(call: Callable[[], Any], repeats: int, dev: torch.device) -> dict[str, Any]:
  """One warm-up, then `repeats` timed calls: their median and all times (ms), and the peak
  GPU memory allocated during the timed calls (MiB; None on the CPU). With `repeats` 0 only the
  untimed call runs: the median and the peak are None, the times empty."""
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  call()
  sync()
  if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    sync()
    times.append(1e3 * (time.perf_counter() - start))
  if not times:
    return {"run_ms": None, "times_ms": [], "peak_mib": None}
  peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
  return {"run_ms": statistics.median(times), "times_ms": times, "peak_mib": peak}


def compute_device(job: dict[str, Any], dev: torch.device) -> torch.device:
  """Where the job computes: published full mode moves to the CPU."""
  on_cpu = job["kind"] == "prospr" and job["method"] == "full" and job["published"]
  return torch.device("cpu") if on_cpu else dev


def run_job(job: dict[str, Any], ref: tuple, repeats: int, dev: torch.device) -> dict[str, Any]:
  """The job's record: its fields, 'ran_on' and `timed_ms`'s results, or 'error' if it raised
  (e.g. out of GPU memory; the run goes on with the next job)."""
  make = {"train_step": train_step_call, "prospr": prospr_call}[job["kind"]]
  ran_on = compute_device(job, dev)
  torch.manual_seed(0)
  try:
    return {**job, "ran_on": str(ran_on), **timed_ms(make(job, ref, dev), repeats, ran_on)}
  except Exception as e:  # pylint: disable=broad-except  # one failed job must not end the run
    return {**job, "ran_on": str(ran_on), "error": f"{type(e).__name__}: {e}"[:500]}
  finally:
    if torch.cuda.is_available():
      torch.cuda.empty_cache()


def environment() -> dict[str, Any]:
  """Versions and devices, written as the first line of --output."""
  return {"kind": "environment", "torch": torch.__version__,
          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "cpu_threads": torch.get_num_threads(),
          "cudnn_benchmark": torch.backends.cudnn.benchmark,
          "cudnn_deterministic": torch.backends.cudnn.deterministic}


def write_line(out: io.TextIOBase, record: dict[str, Any]) -> None:
  """Appends `record` as one JSON line and flushes it to disk."""
  out.write(json.dumps(record) + "\n")
  out.flush()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--plan", required=True, help="JSON file with the list of jobs.")
  parser.add_argument("--output", required=True, help="JSON-lines file to append to.")
  parser.add_argument("--ref_dir", default="third_party_ref", type=pathlib.Path)
  parser.add_argument("--repeats", type=int, default=3,
                      help="Timed calls per job after the warm-up; 0: the warm-up call alone.")
  parser.add_argument("--budget_s", type=float, default=float("inf"),
                      help="Start no job after this many seconds.")
  parser.add_argument("--threads", type=int, default=None,
                      help="torch.set_num_threads (CPU threads); default: torch's own.")
  args = parser.parse_args()
  if args.repeats < 0:
    parser.error(f"--repeats must be >= 0, got {args.repeats}.")
  if args.threads:
    torch.set_num_threads(args.threads)
  start = time.perf_counter()
  jobs = json.loads(pathlib.Path(args.plan).read_text())
  ref, dev = load_reference(args.ref_dir), device()
  with open(args.output, "a") as out:
    write_line(out, environment())
    for job in jobs:
      late = time.perf_counter() - start > args.budget_s
      record = {**job, "skipped": "budget"} if late else run_job(job, ref, args.repeats, dev)
      write_line(out, record)


if __name__ == "__main__":
  main()
