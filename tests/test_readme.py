"""The README's python examples run as written."""

import pathlib
import re

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```",
                    (pathlib.Path(__file__).parents[1] / "README.md").read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
  assert BLOCKS, "README.md has no python example"
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  exec(compile(BLOCKS[0], "README.md", "exec"), namespace)
  assert (tmp_path / "masks.npz").exists()
  assert abs(namespace["pj"].density_summary(namespace["masks"], namespace["params"])
             ["density/total"] - 0.1) < 1e-9


@pytest.mark.parametrize("block", ["linen", "nnx"])
def test_readme_structured_pruning_examples_run(block, tmp_path, monkeypatch):
  """The "Structured pruning of your own model" examples: the linen one, then the NNX one."""
  code = BLOCKS[{"linen": 1, "nnx": 2}[block]]
  assert f"{'nn.Module' if block == 'linen' else 'nnx.Module'}" in code
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  exec(compile(code, f"README.md ({block} structured example)", "exec"), namespace)
  report = namespace["small"].report
  assert report.params_after < report.params_before and report.macs_after < report.macs_before
