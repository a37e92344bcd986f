"""What every entry point does around its one library call: errors for people, clean stops.

``cli.run(main)`` replaces ``absl.app.run(main)``:

- a mistake in the flags or the config (an unknown field, ``--config.x=ture`` for a
  bool, a value out of range, a missing file), in the data or in a checkpoint ends
  with one line ``error: …`` on stderr and exit status 2, without a traceback;
  ``--verbose`` (or ``RLHF_JAX_VERBOSE=1``) shows the traceback too. Any other
  exception is a bug and keeps its traceback;
- SIGTERM or Ctrl-C stop the run after its current step, checkpointed, with
  ``stopped at step N of <stage>; run the same command to resume`` on stderr and
  exit status 128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, NoReturn

from absl import app, flags, logging

from rlhf_jax.errors import UserError
from rlhf_jax.pipeline import preemption

flags.DEFINE_bool("verbose", False, "show the traceback of a user error (also RLHF_JAX_VERBOSE=1)")
FLAGS = flags.FLAGS


def _verbose() -> bool:
    return os.environ.get("RLHF_JAX_VERBOSE", "") not in ("", "0") or \
        (FLAGS.is_parsed() and FLAGS.verbose)


def fail(message: str) -> NoReturn:
    """Prints ``error: <message>`` as one line on stderr and exits with status 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def _last_line(error: Exception) -> str:
    """The line that says what went wrong (ml_collections quotes whole tracebacks)."""
    return [line for line in str(error).splitlines() if line.strip()][-1].strip()


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with every mistake in the flags or the config file as an ``error:`` line."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:  # a bad value, a missing flag, get_config's own ValueError
        flag, line = str(e).split(": ")[0], _last_line(e)
        fail(line if line.startswith(flag) else f"{flag}: {line}")
    except AttributeError as e:  # ml_collections: an override of a field the config lacks
        field = str(e).strip("\"'")
        given = [a for a in argv if re.match(rf"--\w+(\.\w+)*\.{re.escape(field)}(=|$)", a)]
        fail(f"{given[0] if given else field}: the config has no field {field!r}")
    if "config" in FLAGS:
        try:
            FLAGS.config.keys()  # ml_collections reports a config file it could not load here
        except OSError as e:
            fail(f"--config={FLAGS['config'].config_filename}: {_last_line(e)}")
    return rest


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)`` with user errors as one line and stops on SIGTERM / Ctrl-C."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # the data and checkpoint libraries log every step
        try:
            with preemption.stop_on_signals():
                main(argv)
        except preemption.Preempted as stopped:
            print(stopped.describe(), file=sys.stderr)
            sys.exit(stopped.exit_code)
        except UserError as e:
            if _verbose():
                raise
            fail(str(e))

    app.run(guarded, flags_parser=_parse_flags)
