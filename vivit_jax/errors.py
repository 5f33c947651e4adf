"""The error a user can fix: bad input (config, flags, paths, data, checkpoints).

`python -m vivit_jax.main` turns it into a few lines on stderr and exit code 2; any other
exception is a failure during the work (exit 1) or a bug (its traceback is shown).
"""


class UserInputError(ValueError):
  """Bad input; the message names the field or file and says how to fix it."""
