"""The README's "use it from your own JAX code" example runs as written."""

import pathlib
import re


def test_readme_python_example_runs(tmp_path, monkeypatch):
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert blocks, "README.md has no python example"
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)
  assert (tmp_path / "masks.npz").exists()
  assert abs(namespace["pj"].density_summary(namespace["masks"], namespace["params"])
             ["density/total"] - 0.1) < 1e-9
