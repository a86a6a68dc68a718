"""Files that are never seen half-written: write to a temporary file, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str, write: Callable[[IO[str]], None]) -> None:
  """Calls `write(file)` on a temporary text file beside `path`, then renames it onto `path`.

  Readers (and a run killed mid-write) see either the old file or the complete new one.
  """
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
  try:
    with os.fdopen(fd, "w", newline="") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` atomically (see `atomic_write`)."""
  atomic_write(path, lambda f: json.dump(obj, f, indent=2))
