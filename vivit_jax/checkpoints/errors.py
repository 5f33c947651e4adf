"""Errors raised when a checkpoint cannot be read or does not fit a model."""
import contextlib

from vivit_jax.errors import UserInputError


class CheckpointFormatError(UserInputError):
  """The file is missing, truncated, or not a checkpoint of the expected kind."""


class CheckpointMismatchError(UserInputError):
  """Names or shapes of a checkpoint do not fit the model; lists every problem at once.

  Attributes:
    source: the checkpoint (file, directory or description) that was checked.
    shape_mismatches: `[(path, expected_shape, found_shape)]`.
    missing: paths the model needs but the checkpoint lacks.
    unused: paths the checkpoint has but the model does not use.
  """

  def __init__(self, source: str, shape_mismatches=(), missing=(), unused=(), note: str = ""):
    self.source = source
    self.shape_mismatches = list(shape_mismatches)
    self.missing = list(missing)
    self.unused = list(unused)
    n = len(self.shape_mismatches) + len(self.missing) + len(self.unused)
    lines = [f"checkpoint {source} does not fit the model: {n} problem(s)"]
    if note:
      lines.append(note)
    if self.shape_mismatches:
      lines.append(f"  shape mismatches ({len(self.shape_mismatches)}):")
      lines += [f"    {p}: expected {tuple(e)}, found {tuple(f)}"
                for p, e, f in self.shape_mismatches]
    if self.missing:
      lines.append(f"  missing from the checkpoint ({len(self.missing)}):")
      lines += [f"    {p}" for p in self.missing]
    if self.unused:
      lines.append(f"  in the checkpoint but unused by the model ({len(self.unused)}):")
      lines += [f"    {p}" for p in self.unused]
    super().__init__("\n".join(lines))


@contextlib.contextmanager
def reading(source: str, what: str):
  """Any error while decoding `source` leaves as a `CheckpointFormatError` naming it.

  A damaged file fails deep inside a decoder (a key with a '/', an array of the wrong size, a
  JSON field of the wrong type): the user needs the file and the first line, not the trace.
  """
  try:
    yield
  except (CheckpointFormatError, CheckpointMismatchError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    first = first_line(e)
    message = first if str(source) in first else (
        f"{source} is not a readable {what} ({type(e).__name__}: {first})")
    raise CheckpointFormatError(message) from e


def first_line(error: BaseException, limit: int = 300) -> str:
  """The first line of an error's message (TensorStore's run to ~150 lines and may embed a
  trace), cut to `limit` characters."""
  text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
  text = text.split("Traceback (most recent call last)")[0].rstrip()
  return text if len(text) <= limit else text[:limit - 3] + "..."
