"""The experiment binaries' config flag (`define_config_file`) and absl flags parser
(`app.run(main, flags_parser=parse_flags)`).

ml_collections' config flag reads an override of a field that the config lacks
(`--config.prune.nonexistent=1`) as a bare AttributeError or KeyError from deep inside flag
definition (no `--config=` given) or parsing; these two print instead an error that names the
field and lists the fields of its section, on one line like absl's other flag errors, and exit
with status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags


CONFIG_FLAG = "config"


def unknown_override_message(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why `--config.<path>=...` names no field of `config` (None if it names one): the first
  missing key, and the fields of the section it is missing from."""
  section, walked = config, []
  for key in path.split("."):
    if not isinstance(section, (Mapping, ml_collections.ConfigDict)):
      return f"config.{'.'.join(walked)} is a value, not a section: --config.{path} names nothing."
    if key not in section:
      where = ".".join(["config", *walked])
      return f"{where} has no field {key!r}; its fields are {sorted(section)}."
    section, walked = section[key], [*walked, key]
  return None


def _config_file_argument(argv: Sequence[str]) -> str | None:
  """The last `--config=<file>` (or `--config <file>`) of `argv`, None if there is none."""
  found = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{CONFIG_FLAG}="):
      found = arg.split("=", 1)[1]
    elif arg == f"--{CONFIG_FLAG}" and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def _load_config_file(path: str) -> ml_collections.ConfigDict:
  """The config that the config file `path` (ml_collections' `path[:argument]`) defines."""
  scratch = flags.FlagValues()
  config_flags.DEFINE_config_file(CONFIG_FLAG, None, flag_values=scratch)
  return scratch[CONFIG_FLAG].parser.parse(path)


def unknown_override(argv: Sequence[str],
                     default: Callable[[], ml_collections.ConfigDict]) -> str | None:
  """Why the first `--config.<path>=...` of `argv` that names no field of the config (from the
  `--config=` file, else `default()`) is wrong (`unknown_override_message`), or
  None if every override names a field."""
  path = _config_file_argument(argv)
  config = default() if path is None else _load_config_file(path)
  prefix = f"--{CONFIG_FLAG}."
  for arg in argv:
    if arg.startswith(prefix):
      message = unknown_override_message(
          config, arg.removeprefix(prefix).split("=", 1)[0])
      if message is not None:
        return f"{arg.split('=', 1)[0]}: {message}"
  return None


def config_with_overrides(config_file: str, overrides: Sequence[str]
                          ) -> ml_collections.ConfigDict:
  """The config of `config_file` with `overrides` (`--config.<field>=<value>` arguments)
  applied as the binaries' config flag applies them.

  Raises:
    ValueError: an override names no field of the config (`unknown_override`).
  """
  argv = ["config_with_overrides", f"--{CONFIG_FLAG}={config_file}", *overrides]
  message = unknown_override(argv, default=lambda: _load_config_file(config_file))
  if message is not None:
    raise ValueError(message)
  scratch = flags.FlagValues()
  config_flags.DEFINE_config_file(CONFIG_FLAG, None, flag_values=scratch, sys_argv=argv)
  scratch(argv)
  return scratch[CONFIG_FLAG].value


def _exit_if_unknown_override(argv: Sequence[str],
                              default: Callable[[], ml_collections.ConfigDict]) -> None:
  """Exits with status 1 after one line if an override in `argv` names an unknown field."""
  message = unknown_override(argv, default)
  if message is not None:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.exit(1)


def define_config_file(default_path: str, help_string: str) -> None:
  """`config_flags.DEFINE_config_file('config', default_path, help_string)` (see the module
  docstring for an override of an unknown field)."""
  try:
    config_flags.DEFINE_config_file(CONFIG_FLAG, default_path, help_string)
  except (AttributeError, KeyError):
    _exit_if_unknown_override(sys.argv, lambda: _load_config_file(default_path))
    raise


def parse_flags(argv: list[str]) -> list[str]:
  """`app.parse_flags_with_usage(argv)`, the arguments left (see the module docstring for an
  override of an unknown field); the config flag comes from `define_config_file`."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    _exit_if_unknown_override(argv, lambda: flags.FLAGS[CONFIG_FLAG].default)
    raise
