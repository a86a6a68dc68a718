"""results.json's provenance: the git commit of the code that ran, and versions."""

import subprocess

import jax

from prospr_jax.experiment import provenance
from prospr_jax.experiment.provenance import _SOURCE_DIR


def test_provenance_names_this_checkouts_commit_and_the_versions():
  head = subprocess.run(["git", "-C", _SOURCE_DIR, "rev-parse", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()
  status = subprocess.run(["git", "-C", _SOURCE_DIR, "status", "--porcelain",
                           "--untracked-files=no"], capture_output=True, text=True,
                          check=True).stdout
  info = provenance.provenance()
  assert info["git_commit"] == head and len(head) == 40
  assert info["git_dirty"] is bool(status.strip())
  assert info["versions"]["jax"] == jax.__version__
  assert info["device_kind"] == jax.devices()[0].device_kind
  assert info["num_processes"] == 1


def test_outside_a_checkout_the_commit_is_unknown_unless_named(monkeypatch, tmp_path):
  monkeypatch.setattr(provenance, "_SOURCE_DIR", str(tmp_path))
  monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
  assert provenance.code_version() == {"git_commit": None, "git_dirty": None}
  monkeypatch.setenv(provenance.COMMIT_ENV, "b" * 40)  # a copied tree, e.g. on a device
  assert provenance.code_version() == {"git_commit": "b" * 40, "git_dirty": None}


def test_inside_a_checkout_its_own_commit_wins_over_the_named_one(monkeypatch):
  monkeypatch.setenv(provenance.COMMIT_ENV, "b" * 40)
  assert provenance.code_version()["git_commit"] != "b" * 40


def test_code_version_is_described_in_one_line():
  sha = "a" * 40
  assert provenance.describe_code_version({"git_commit": sha, "git_dirty": False}) == (
      f"commit {sha}")
  assert provenance.describe_code_version({"git_commit": sha, "git_dirty": True}) == (
      f"commit {sha} with local changes")
  assert provenance.describe_code_version({"git_commit": None, "git_dirty": None}) == (
      "no git checkout")
