"""Every notebook runs top to bottom on its smallest setting, and is committed without outputs.

The smallest setting is a code cell inserted after the notebook's ``parameters`` cell (the
papermill convention), run in a fresh kernel whose working directory is ``notebooks/``, as in
Jupyter. Any error in any cell fails the test with the cell's traceback.
"""

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SMALLEST = {
    "01_quickstart": "MAX_NEW_TOKENS = 12",
    "02_reward_model": "WORKDIR = {workdir!r}; PROMPTS = 64; TEST_PROMPTS = 16; STEPS = 12",
    "03_ppo_from_scratch": ("WORKDIR = {workdir!r}; PRESET = 'micro'; ITERATIONS = 2; BATCH = 8; "
                            "MINIBATCHES = 2; EVAL_EVERY = 2"),
    "04_reading_a_run": "WORKDIR = {workdir!r}; PRESET = 'micro'",
}


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def parameters_cell(notebook) -> int:
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def execute(name: str, workdir: Path | None = None) -> nbformat.NotebookNode:
    notebook = read(name)
    settings = SMALLEST[name].format(workdir=str(workdir))
    notebook.cells.insert(parameters_cell(notebook) + 1, nbformat.v4.new_code_cell(settings))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def test_every_notebook_is_tested_and_committed_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALLEST)
    for name in SMALLEST:
        notebook = read(name)
        nbformat.validate(notebook)
        parameters_cell(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{name}: outputs are committed; strip them (nbstripout notebooks/*.ipynb)")


def test_quickstart():
    notebook = execute("01_quickstart")
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "Paris" in text


def test_reward_model(tmp_path):
    execute("02_reward_model", tmp_path)
    assert (tmp_path / "rm" / "reward_model" / "model.json").exists()


def test_ppo_from_scratch(micro_pipeline, tmp_path):
    """On the stages up to the reward model of the shared micro run (tests/conftest.py)."""
    finished = ("inputs", "base", "sft", "round1/comparisons", "round1/rm")
    for stage in finished:
        shutil.copytree(Path(micro_pipeline[0], stage), tmp_path / stage)
    execute("03_ppo_from_scratch", tmp_path)
    # run_instructgpt(..., through="round1/rm") found those finished and ran nothing after them
    assert sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.glob("**/result.json")) \
        == sorted(finished[1:])


def test_reading_a_run(micro_pipeline):
    execute("04_reading_a_run", Path(micro_pipeline[0]))  # reads it, writes nothing
