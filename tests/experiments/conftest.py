"""The fixture of the interruption tests (``test_interrupt_*.py``)."""

import pytest

from tests.experiments import runs


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
    """The outcome (``runs.outcome``) of one uninterrupted run of the test module's ``STAGE``,
    which every interrupted run must end with."""
    stage = request.module.STAGE
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    status, output = runs.run(stage, workdir)
    assert status == 0, output[-3000:]
    return runs.outcome(stage, workdir)
