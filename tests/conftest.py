"""Test setup: 8 virtual CPU devices, and the Scenic reference fixtures."""
import os
import pathlib

# Must happen before jax is imported anywhere: gives 8 CPU devices in one process so
# that mesh/sharding code runs exactly as it would on 8 accelerators.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# CI and developers have `shared/` beside the checkout; VIVIT_FIXTURES overrides.
FIXTURES = pathlib.Path(
    os.environ.get("VIVIT_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
SCENIC_REF = FIXTURES / "scenic_ref"


@pytest.fixture(scope="session")
def scenic_ref() -> pathlib.Path:
  if not SCENIC_REF.is_dir():
    pytest.fail(f"Scenic reference fixtures not found at {SCENIC_REF} "
                "(set VIVIT_FIXTURES to the folder holding scenic_ref/)")
  return SCENIC_REF
