"""The notebook tour (notebooks/tour.ipynb) runs top to bottom and is committed without outputs.

After editing the notebook in Jupyter, strip its outputs, execution counts and metadata before
committing (from the repository root):

    python tests/test_notebook.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"
PLOT_CELLS = {"latency", "commits", "waterfall"}


def stripped(nb: Any) -> Any:
    """Return ``nb`` without outputs, execution counts, cell metadata or editor metadata."""
    nb = nbformat.from_dict(nb)
    nb.metadata = {"kernelspec": nb.metadata["kernelspec"]}
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def write_stripped(path: Path = NOTEBOOK) -> None:
    """Rewrite the notebook at ``path`` stripped (see :func:`stripped`)."""
    nbformat.write(stripped(nbformat.read(path, as_version=4)), path)


def test_committed_notebook_has_no_outputs() -> None:
    text = NOTEBOOK.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the tour has no code cell"
    assert [cell.id for cell in code if cell.outputs or cell.execution_count is not None] == []
    assert [cell.id for cell in nb.cells if cell.metadata] == []
    assert set(nb.metadata) == {"kernelspec"}
    assert nb.metadata.kernelspec.name == "python3"
    # Byte for byte what the strip command writes: no diff noise from the editor either.
    assert text == nbformat.writes(stripped(nb)) + "\n", "run: python tests/test_notebook.py"


@pytest.mark.integration
def test_notebook_runs_top_to_bottom() -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # headless, as in CI
    # The kernel imports vsrtel from this checkout, not from wherever it is installed.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,  # per cell; the whole tour takes a few seconds
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute(env=env)  # raises CellExecutionError naming the cell on any error

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    plotted = {
        cell.id for cell in code
        if any("image/png" in out.get("data", {}) for out in cell.outputs)
    }
    assert plotted == PLOT_CELLS
    stderr = {
        cell.id: out.text for cell in code for out in cell.outputs
        if out.output_type == "stream" and out.name == "stderr"
    }
    assert stderr == {}, "the tour prints warnings or errors"


if __name__ == "__main__":
    write_stripped(Path(sys.argv[1]) if len(sys.argv) > 1 else NOTEBOOK)
