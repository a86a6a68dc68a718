"""Atomic writes: a failed write leaves the previous file intact and no temporary file."""

import json

import pytest

from prospr_jax.experiment import atomic_files


def test_write_json_replaces_the_file(tmp_path):
  path = str(tmp_path / "r.json")
  atomic_files.write_json(path, {"a": 1})
  atomic_files.write_json(path, {"a": 2, "b": [1.5]})
  with open(path) as f:
    assert json.load(f) == {"a": 2, "b": [1.5]}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "r.json")
  atomic_files.write_json(path, {"a": 1})

  def half_then_fail(f):
    f.write('{"a": ')
    raise RuntimeError("killed mid-write")

  with pytest.raises(RuntimeError, match="mid-write"):
    atomic_files.atomic_write(path, half_then_fail)
  with pytest.raises(TypeError):
    atomic_files.write_json(path, {"a": object()})  # not JSON-serializable, half written
  with open(path) as f:
    assert json.load(f) == {"a": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
