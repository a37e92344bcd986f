"""Entry points run as ``python -m <module> ARGS`` runs them, in this process or in a new one.

``invoke(module, argv)`` runs ``cli.run(module.main)`` in this process and returns ``(exit
status, stderr)``: one process for many runs saves the ~5 s of imports per run. Tests call it
through ``invoke_all``, in a process of its own: a test process may hold another entry point's
flags. absl's flags are global, so the
flags are reset before each run, and a process holds one entry module: those of
``experiments.train`` and ``experiments.instructgpt`` (both define ``--config``) cannot be
imported together, and ``experiments.generate``'s required flags would fail any other's parse.
Give ``--config`` explicitly: ml_collections parses a flag's default config file once, when the
flag is defined, with the overrides then in ``sys.argv``. An exception that escapes ``cli.run``
(a bug) comes back as status 1 with its traceback.

``python -m tests.experiments.entry MODULE`` reads a JSON list of argument lists on stdin,
invokes ``MODULE`` with each in this one process and prints the JSON list of ``[status,
stderr]``. ``run(module, argv)`` is the real thing: ``python -m module ARGS`` in a new process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback

from absl import flags

from tests import processes


def _reset_flags() -> None:
    """Every flag back to its default, unparsed; the ``--config.<field>`` overrides that
    ml_collections defined while parsing the last ``--config`` are removed."""
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)


def invoke(module: str, argv: list[str]) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``python -m module *argv``, run in this process."""
    from experiments import cli

    entry = importlib.import_module(module)
    stderr, saved_argv = io.StringIO(), sys.argv
    _reset_flags()
    sys.argv = [module, *argv]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.run(entry.main)
            except SystemExit as e:  # absl's app.run ends with sys.exit(main(argv)) = status 0
                return 0 if e.code is None else e.code, stderr.getvalue()
            except Exception:  # a bug: its traceback is the report
                traceback.print_exc()
                return 1, stderr.getvalue()
            return 0, stderr.getvalue()
    finally:
        sys.argv = saved_argv
        _reset_flags()


def invoke_all(module: str, argvs: list[list[str]]) -> list[tuple[int, str]]:
    """``invoke(module, argv)`` for each ``argv``, all in one new process."""
    done = processes.run(["-m", "tests.experiments.entry", module], input=json.dumps(argvs),
                         check=True)
    return [tuple(result) for result in json.loads(done.stdout)]


def run(module: str, argv: list[str]) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``python -m module *argv`` in a process of its own."""
    done = processes.run(["-m", module, *argv])
    return done.returncode, done.stderr


if __name__ == "__main__":
    results = [invoke(sys.argv[1], argv) for argv in json.load(sys.stdin)]
    print(json.dumps(results))
