"""How papermill saves a step's notebook while it runs: after each code cell starts and ends.

Papermill saves the whole notebook when any cell starts and when it ends, markdown cells
included: two thirds of its saves were for cells that run nothing, and a save (copy, split,
validate, serialize) costs about 15 ms of CPU, 4 s in a run. Here a markdown cell's start and
end are noted in the notebook but not written on their own; every code cell is still written as
it starts (a run killed while it waits shows the cell it was in) and as it ends, and papermill
still writes the notebook at the end, failed or not.
"""

from __future__ import annotations

from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

NAME = "kbmigrate"


class CodeCellSaves(NotebookExecutionManager):  # type: ignore[misc]
    def _unsaved(self, method: Any, cell: Any, cell_index: Any, **kwargs: Any) -> None:
        path, self.output_path = self.output_path, None
        try:
            method(cell, cell_index, **kwargs)
        finally:
            self.output_path = path

    def cell_start(self, cell: Any, cell_index: Any = None, **kwargs: Any) -> None:
        if cell.cell_type == "code":
            super().cell_start(cell, cell_index, **kwargs)
        else:
            self._unsaved(super().cell_start, cell, cell_index, **kwargs)

    def cell_complete(self, cell: Any, cell_index: Any = None, **kwargs: Any) -> None:
        if cell.cell_type == "code":
            super().cell_complete(cell, cell_index, **kwargs)
        else:
            self._unsaved(super().cell_complete, cell, cell_index, **kwargs)


class Engine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, saving as ``CodeCellSaves`` does."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None, progress_bar: bool = True,
                         log_output: bool = False, autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        nb_man = CodeCellSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                               autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(NAME, Engine)
