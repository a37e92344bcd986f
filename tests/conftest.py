"""Every test runs on CPU with 8 fake devices, so sharded code is exercised without accelerators."""

import os

import pytest
from filelock import FileLock

from tests.tiers import tier_of

# Eight fake CPU devices. LLVM's optimization level 0: the tests' models are tiny, so most of a
# test's time is XLA compiling them, and -O0 compiles ~40% faster. Results differ from the
# default level by float rounding only (a tiny model's gradients: by 1.1e-5 at most); speed is
# measured by benchmarks/, at the default level.
_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0")
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache per test run, shared by the pytest-xdist workers: the
# pipeline tests run the same stages several times, and most of a stage's time is compilation.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join("/tmp", f"rlhf_jax_xla_{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# Files whose one test outlasts much of the suite (the SmolLM2 pipeline: over 30 min on a CPU
# without bf16 arithmetic). They run first, so that under --dist=loadfile the other worker
# works through the rest beside them instead of idling at the end.
LONGEST_FIRST = ("tests/pipeline/test_smollm2_preset.py",)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    """Marks each test with its tier (tests/tiers.py); puts ``LONGEST_FIRST`` first."""
    for item in items:
        tier = tier_of(item.nodeid)
        if tier is not None:
            item.add_marker(tier)
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory, worker_id) -> tuple[str, dict]:
    """``(workdir, results)`` of the whole two-round ``micro`` pipeline, run once per test run:
    the pytest-xdist workers share it (the first to ask runs it, the others wait on the lock and
    find every stage finished). Tests read it, or work on a copy."""
    from rlhf_jax.pipeline.instructgpt import run_instructgpt
    from tests.pipeline.micro import micro_config

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the run's directory, above each worker's own
    workdir = root / "micro_pipeline"
    with FileLock(f"{workdir}.lock"):
        return str(workdir), run_instructgpt(micro_config(), str(workdir))
