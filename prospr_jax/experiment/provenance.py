"""Where a result came from: the code's git commit, the library versions and the devices."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

import jax

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint")
_SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
COMMIT_ENV = "PROSPR_GIT_COMMIT"
"""Names the commit of a copy of a clean checkout that has no `.git` (a tree copied to a device
machine: `scripts/gpu_study.sh` sets it from the checkout it staged)."""


def _git(*args: str) -> str | None:
  """Output of `git <args>` run in this package's source checkout; None outside one."""
  try:
    out = subprocess.run(
        ["git", "-C", _SOURCE_DIR, *args], capture_output=True, text=True, check=True,
        timeout=30,
    )
  except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip()


def code_version() -> dict[str, Any]:
  """`{'git_commit': sha or None, 'git_dirty': bool or None}` of the checkout holding this code.

  `git_dirty` is True when a tracked file differs from the commit (untracked files such as
  results and work directories do not count); both are None when the package is not in a git
  checkout (e.g. installed from a wheel). Outside a checkout, `$PROSPR_GIT_COMMIT` (`COMMIT_ENV`)
  names the commit if it is set, with `git_dirty` None: the copy cannot be checked here.
  """
  commit = _git("rev-parse", "HEAD")
  if commit is None:
    return {"git_commit": os.environ.get(COMMIT_ENV) or None, "git_dirty": None}
  status = _git("status", "--porcelain", "--untracked-files=no")
  return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def describe_code_version(code: dict[str, Any]) -> str:
  """One line for a `code_version()` record: 'commit <sha>', plus ' with local changes' when
  the tree was dirty; 'no git checkout' when the commit is unknown."""
  if code["git_commit"] is None:
    return "no git checkout"
  return f"commit {code['git_commit']}{' with local changes' if code['git_dirty'] else ''}"


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def provenance() -> dict[str, Any]:
  """What `results.json` records about how a run was made.

  Returns the code version (`code_version`), the installed versions of jax, jaxlib, flax,
  optax, numpy and orbax-checkpoint, the Python version, the device kind, platform and
  counts, and the number of processes.
  """
  devices = jax.devices()
  return {
      **code_version(),
      "versions": {p: _version(p) for p in _PACKAGES} | {"python": platform.python_version()},
      "device_kind": devices[0].device_kind,
      "platform": devices[0].platform,
      "num_devices": len(devices),
      "num_processes": jax.process_count(),
  }
