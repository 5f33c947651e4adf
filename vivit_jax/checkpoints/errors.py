"""Errors raised when a checkpoint cannot be read or does not fit a model."""
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
