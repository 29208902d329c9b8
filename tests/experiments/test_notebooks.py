"""The notebooks in notebooks/: committed without outputs, and they run end to end.

Each notebook is executed with nbclient in a fresh kernel of this interpreter, on real
MNIST (``TFDS_DATA_DIR`` from the ``mnist_dir`` fixture) with the tiny budgets of
``ADMMJAX_NOTEBOOK_QUICK=1``. The last cell of every notebook asserts the exact
nonzero counts of the pruned model and prints ``ok``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from experiments import notebook_utils

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "admmjax-tests"


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_inside_admm.ipynb",
        "03_bring_your_own_model.ipynb",
        "04_transformer.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, path
    fix = "clear it: python -m experiments.notebook_utils strip notebooks/*.ipynb"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs; {fix}"
        assert cell.execution_count is None, f"{path.name}: code cell {i} was run; {fix}"
        assert "execution" not in cell.metadata, f"{path.name}: code cell {i} has timings; {fix}"
    source = "\n".join(c.source for c in code)
    assert "import admmjax" in source and "from experiments" in source
    assert 'os.environ.get("ADMMJAX_NOTEBOOK_QUICK") == "1"' in code[0].source


def test_strip_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert notebook_utils.strip_outputs(path)
    back = nbformat.read(path, as_version=4)
    assert back.cells[1].outputs == [] and back.cells[1].execution_count is None
    assert "execution" not in back.cells[1].metadata
    assert back.cells[1].source == "print(1)" and back.cells[0].source == "# title"
    assert not notebook_utils.strip_outputs(path)  # already clean: file untouched


def test_default_data_dir(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(NOTEBOOK_DIR)  # where a kernel runs
    # A path relative to the repository root (as in the README's commands) still works.
    monkeypatch.setenv("TFDS_DATA_DIR", os.path.relpath(mnist_dir, REPO))
    assert notebook_utils.default_data_dir() == str(Path(mnist_dir).resolve())
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert notebook_utils.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    shared = REPO.parent / "shared" / "tfds"
    assert notebook_utils.default_data_dir() == (str(shared) if shared.is_dir() else None)


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> str:
    """A kernelspec running this interpreter, whatever kernels the user has installed."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "admmjax tests", "language": "python"})
    )
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_real_mnist(path, kernel_dir, mnist_dir, tmp_path, monkeypatch):
    # The kernel inherits this environment: quick budgets, the data, and a temp dir
    # for the notebooks' workdirs and files.
    monkeypatch.setenv("ADMMJAX_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", mnist_dir)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir])
    )
    client = NotebookClient(
        nb, km=km, timeout=600, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback

    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    printed = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    assert printed.strip().endswith("ok"), printed
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    if path.stem != "03_bring_your_own_model":  # 01 shows the run's PNGs, 02 draws figures
        assert images, f"{path.name} displayed no figure"
