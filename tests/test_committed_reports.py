"""Every report committed under docs/reports/ is what the documented command makes of the
committed runs today: the commands are read from docs/results.md, rerun into a temporary
directory, and their tables compared with the committed ones (plots are not compared: their
bytes depend on the matplotlib build)."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTS = ROOT / "docs" / "reports"
TABLE = "results_table.md"


def documented_report_commands() -> dict[str, list[str]]:
  """`{report directory name: the arguments of its experiments/report.py command}`, from the
  indented command blocks of docs/results.md (backslash continuations joined)."""
  text = (ROOT / "docs" / "results.md").read_text().replace("\\\n", " ")
  commands = {}
  for line in text.splitlines():
    if "experiments/report.py" not in line or not line.startswith("    "):
      continue
    args = shlex.split(line)
    args = args[args.index("experiments/report.py") + 1:]
    (output,) = [a.split("=", 1)[1] for a in args if a.startswith("--output_dir=")]
    assert output.startswith("docs/reports/"), output
    commands[output.removeprefix("docs/reports/")] = args
  return commands


COMMANDS = documented_report_commands()


def test_every_committed_report_has_a_documented_command():
  committed = sorted(p.name for p in REPORTS.iterdir() if (p / TABLE).exists())
  assert committed and sorted(COMMANDS) == committed


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_committed_report_is_what_its_command_makes_today(name, tmp_path):
  args = [re.sub(r"^--output_dir=.*", f"--output_dir={tmp_path}", a) for a in COMMANDS[name]]
  done = subprocess.run([sys.executable, "experiments/report.py", *args], cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert (tmp_path / TABLE).read_text() == (REPORTS / name / TABLE).read_text(), (
      f"docs/reports/{name}/{TABLE} is stale: rerun its command in docs/results.md")
