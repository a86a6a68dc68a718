"""TensorBoard scalar summaries written without TensorFlow (`ScalarWriter`).

`flax.metrics.tensorboard` imports TensorFlow (seconds and ~700 MB); a training run only writes
scalars, so this module writes TensorBoard's event files itself: TFRecord framing (length,
masked CRC-32C checksums) around `tensorboard.compat.proto.event_pb2.Event` protos.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from tensorboard.compat.proto import event_pb2, summary_pb2

_CRC32C_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected polynomial


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum of `data`: CRC-32C, rotated right by 15 bits plus a constant."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
  """`data` framed as one TFRecord."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked_crc32c(length)) + data
          + struct.pack("<I", _masked_crc32c(data)))


class ScalarWriter:
  """Appends scalar summaries to a new event file in `logdir` (read by TensorBoard)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self._file = open(os.path.join(logdir, name), "ab")  # pylint: disable=consider-using-with
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._file.write(_record(event.SerializeToString()))

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Records `value` (a float) under `tag` at training step `step`."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, simple_value=float(value))])
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()
