"""The layers of the code: each package of ``rlhf_jax`` imports only the packages below it, and
nothing in the library imports ``configs`` or ``experiments`` (README, "Reading the code").
Beneath every package lie two modules any of them may import, which import nothing of the
library: ``errors`` (what is the user's to fix) and ``files`` (atomic writes)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"errors", "files"}  # rlhf_jax/errors.py, rlhf_jax/files.py
# package -> the rlhf_jax packages it may import (lowest first)
ALLOWED = {
    "rl": set(), "data": set(), "feedback": set(), "parallel": set(),
    "models": {"parallel"},
    "sampling": {"models", "parallel"},
    "checkpoints": {"models", "parallel"},
    "train": {"models", "parallel", "rl", "sampling"},
    # judging saved models: sampling, scoring, likelihoods, the batched-sums evaluator
    "evaluation": {"models", "parallel", "rl", "sampling", "train", "checkpoints", "data",
                   "feedback"},
    # the drivers: stage loops and the whole pipeline read and write workdirs
    "pipeline": {"models", "parallel", "rl", "sampling", "train", "checkpoints", "data", "feedback",
                 "evaluation"},
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_every_package_imports_only_the_layers_below_it():
    packages = {p.name for p in (ROOT / "rlhf_jax").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), "a new package needs its place in ALLOWED"
    for package in sorted(packages):
        for path in sorted((ROOT / "rlhf_jax" / package).rglob("*.py")):
            for name in imported_modules(path):
                top, *rest = name.split(".")
                where = path.relative_to(ROOT)
                assert top not in ("configs", "experiments"), f"{where} imports {name}"
                if top == "rlhf_jax" and rest and rest[0] != package:
                    assert rest[0] in ALLOWED[package] | BASE, \
                        f"{where} imports {name}: a higher layer"


def test_the_base_modules_import_nothing_of_the_library():
    for name in sorted(BASE):
        path = ROOT / "rlhf_jax" / f"{name}.py"
        assert not [m for m in imported_modules(path) if m.startswith("rlhf_jax")], path
