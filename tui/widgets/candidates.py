"""The candidates table: generation, name, status (with the failed check), fitness, time; sortable."""
from __future__ import annotations

from textual.widgets import DataTable

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import Candidate

COLUMNS = ("gen", "id", "name", "status", "fitness", "time")


def status_text(candidate: Candidate) -> str:
    if candidate.status == CandidateStatus.REJECTED:
        return f"rejected ({candidate.failed_check})"
    if candidate.status == CandidateStatus.DUPLICATE:
        return f"duplicate of #{candidate.duplicate_of}"
    if candidate.status == CandidateStatus.EVALUATED:
        return "judged"
    return candidate.status


def _seconds(candidate: Candidate) -> str:
    total = sum(v for v in candidate.timings.values() if isinstance(v, (int, float)))
    return f"{total:.1f}s" if total else ""


class CandidatesTable(DataTable):
    """Rows keyed by candidate id; `update_rows` adds new ones and updates changed ones in place."""

    DEFAULT_CSS = "CandidatesTable { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._sort_column = "id"
        self._sort_reverse = False

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column, key=column)

    def _update_dimensions(self, new_rows) -> None:
        """Textual's column widths catch up with new rows on idle, but its caches of drawn rows are keyed
        by an update counter, not by the widths: a row drawn in between (the screen refreshes on its own
        timer) could stay drawn with the header-only widths, squashed, until the next change. Redraw."""
        super()._update_dimensions(new_rows)
        self._update_count += 1
        self.refresh()

    def update_rows(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            values = (
                "" if c.generation is None else str(c.generation),
                str(c.id),
                c.name,
                status_text(c),
                "" if c.fitness is None else f"{c.fitness:+.4f}",
                _seconds(c),
            )
            key = str(c.id)
            if key in self.rows:
                for column, value in zip(COLUMNS, values):
                    self.update_cell(key, column, value)
            else:
                self.add_row(*values, key=key)
        if self._sort_column != "id" or self._sort_reverse:
            self.sort_by(self._sort_column, self._sort_reverse)

    def sort_by(self, column: str, reverse: bool) -> None:
        self._sort_column, self._sort_reverse = column, reverse

        def key(value: str):
            try:
                return (0, float(value))
            except ValueError:
                return (1 if value else 2, value)

        self.sort(column, key=key, reverse=reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        self.sort_by(column, reverse=not self._sort_reverse if column == self._sort_column else column == "fitness")

    def cycle_sort(self) -> str:
        """Sort by the next column (keyboard); fitness sorts best first."""
        order = ["id", "fitness", "gen", "name", "status"]
        column = order[(order.index(self._sort_column) + 1) % len(order)] if self._sort_column in order else "id"
        self.sort_by(column, reverse=column == "fitness")
        return column

    def selected_id(self) -> int | None:
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(row_key.value)
