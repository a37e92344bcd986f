"""Import every module of rlhf_jax, configs and experiments; exit non-zero if any fails.

Run from the repository root (configs/ and experiments/ are directories there, not installed
packages): `python scripts/import_all.py`. scripts/check_install.sh runs it in a bare install to
find runtime dependencies that setup.py does not declare.
"""

import importlib
import os
import pkgutil
import subprocess
import sys
import traceback

PACKAGES = ("rlhf_jax", "configs", "experiments")
# The entry points define their absl flags at import time in one global registry, and two of them
# define --config, so each is imported in a process of its own.
OWN_PROCESS = ("experiments.",)


def module_names(failed: list[str]) -> list[str]:
    names = []
    for package_name in PACKAGES:
        names.append(package_name)
        package = importlib.import_module(package_name)
        # walk_packages imports each subpackage to list its children; an ImportError there is
        # reported through onerror rather than swallowed.
        names += [info.name for info in pkgutil.walk_packages(
            package.__path__, package_name + ".", onerror=failed.append)]
    return names


def main() -> int:
    sys.path.insert(0, os.getcwd())  # `python scripts/import_all.py` puts scripts/, not the root, first
    failed: list[str] = []
    names = module_names(failed)
    for name in names:
        if name.startswith(OWN_PROCESS):
            code = f"import importlib; importlib.import_module({name!r})"
            if subprocess.run([sys.executable, "-c", code]).returncode != 0:
                failed.append(name)
            continue
        try:
            importlib.import_module(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    failed = list(dict.fromkeys(failed))
    for name in failed:
        print(f"FAILED to import {name}", file=sys.stderr)
    print(f"imported {len(names) - len(failed)} of {len(names)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
