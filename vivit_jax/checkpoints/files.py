"""Reading checkpoint files from local disk or remote filesystems (gs://, s3://, ...).

Local paths use the OS directly; anything with a `scheme://` goes through `tf.io.gfile`
(imported only then, because importing TensorFlow takes seconds).
"""
import io
import os
import re

from vivit_jax.checkpoints.errors import CheckpointFormatError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(path: str) -> bool:
  return bool(_URL.match(str(path)))


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  names = _gfile().listdir(path) if is_remote(path) else os.listdir(path)
  return sorted(n.rstrip("/") for n in names)


def join(path: str, name: str) -> str:
  return f"{str(path).rstrip('/')}/{name}" if is_remote(path) else os.path.join(path, name)


def read_bytes(path: str) -> bytes:
  """The whole file; a clear error naming the path when it is missing or unreadable."""
  path = str(path)
  if not exists(path):
    raise CheckpointFormatError(f"checkpoint file not found: {path}")
  if isdir(path):
    raise CheckpointFormatError(f"{path} is a directory, expected a file")
  try:
    if is_remote(path):
      with _gfile().GFile(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise CheckpointFormatError(f"cannot read {path}: {e}") from e


def open_binary(path: str):
  """A seekable binary file object (remote files are read into memory)."""
  path = str(path)
  if is_remote(path):
    return io.BytesIO(read_bytes(path))
  if not os.path.isfile(path):
    raise CheckpointFormatError(f"checkpoint file not found: {path}")
  return open(path, "rb")


NPZ_MAGIC = b"PK\x03\x04"  # .npz files are zip archives

