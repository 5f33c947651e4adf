"""Command-line tools (`python -m vivit_jax.tools.<name>`)."""
