"""`lossforge tui`: watch the agent think, see every candidate, steer the search.

Two modes. *Run*: the app starts a search in a worker thread (`run_search`) and receives its events as
messages; controls pause, stop, hint, pin, exclude and export act on it. *Attach*: the app follows a
run started elsewhere (a cron job) by tailing its `events.jsonl` and reading its archive read-only; it
never writes to that run. Nothing blocks the UI: the search, the loss-curve sampling and the archive
reads happen off the event loop or in small steps, and the UI changes only through messages.

The budgets (generations, LLM dollars, tokens and calls, GPU-hours) are gauges in both modes, fed by
`tui.budget.BudgetFigures` from the events (`run_started`, `llm_call`, `budget`), the archive (evaluated
candidates, the LLM spending saved in its meta) and the run's configuration (`config.json` when
attached). Below 120 columns they are one line (`BudgetStrip`) under the table and the detail.

The candidates in flight (``[search] concurrency`` walks, and training jobs that outlived theirs) and
what each is doing are one line above the footer (`InFlightBar`, hidden while none is), read from the
archive with `rundir.in_flight` (as `lossforge status` reads them) whenever an event refreshes the view.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header

from lossforge.rundir.archive import Archive, Candidate
from lossforge.rundir.events import EventKind, read_events
from lossforge.rundir.in_flight import in_flight
from lossforge.rundir.steering import add_hint, toggle
from lossforge.config import RunConfig
from lossforge.tui.budget import BudgetFigures
from lossforge.tui.messages import SearchEvent, SearchFinished
from lossforge.tui.screens import ConfirmStop, HintInput
from lossforge.tui.widgets.candidates import CandidatesTable
from lossforge.tui.widgets.detail import CandidateDetail, LossPlot
from lossforge.tui.widgets.gauges import BudgetStrip
from lossforge.tui.widgets.in_flight import InFlightBar
from lossforge.tui.widgets.logs import EventLog, ReasoningView
from lossforge.tui.widgets.progress import BestChart, Budgets

REFRESH_KINDS = {
    EventKind.RUN_STARTED, EventKind.RUN_RESUMED, EventKind.PROPOSAL, EventKind.CHECKING, EventKind.CHECK,
    EventKind.DUPLICATE, EventKind.SCREEN_STARTED, EventKind.EVALUATED, EventKind.REFLECTION,
    EventKind.RUN_STOPPED, EventKind.ERROR, EventKind.TRAINED,
}


class LossforgeApp(App):
    TITLE = "lossforge"
    CSS = """
    #left { width: 2fr; }
    #right { width: 3fr; }
    #charts { height: 10; }
    #charts BestChart { width: 1fr; }
    #charts Budgets { width: 36; }
    BudgetStrip { display: none; }
    CandidatesTable { border: round $primary; }
    /* below 120 columns: the table above the selected candidate, reasoning/charts/events hidden */
    Screen.narrow #main { layout: vertical; }
    Screen.narrow #left, Screen.narrow #right { width: 1fr; }
    Screen.narrow ReasoningView, Screen.narrow #charts, Screen.narrow EventLog { display: none; }
    Screen.narrow LossPlot { height: 8; }
    Screen.narrow BudgetStrip { display: block; }
    """
    NARROW = 120
    BINDINGS = [
        Binding("q", "quit_app", "Quit"),
        Binding("p", "pause", "Pause/resume"),
        Binding("s", "stop", "Stop"),
        Binding("h", "hint", "Hint"),
        Binding("i", "pin", "Pin"),
        Binding("x", "exclude", "Exclude"),
        Binding("e", "export", "Export"),
        Binding("o", "sort", "Sort"),
        Binding("t", "toggle_theme", "Theme"),
    ]

    def __init__(self, run_dir: Path, config: RunConfig | None = None, attach: bool = False, proposer: Any = None) -> None:
        super().__init__()
        self.proposer = proposer  # None: the configured proposer
        self.run_dir = Path(run_dir)
        self.config = config or RunConfig()
        self.attach = attach
        self.stop_event = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.archive: Archive | None = None
        self.candidates: dict[int, Candidate] = {}
        self.target: int | None = None
        self.finished: dict[str, Any] | None = None
        self._events_offset = 0
        self._dirty = False
        self._curves: dict[int, dict] = {}
        self._dpo_curve: dict | None = None
        self._shown_id: int | None = None
        self._flight_warned = False
        self.budget = BudgetFigures()
        self.budget.set_llm_limits(self._llm_limits())
        # Sandboxes start their worker server here, before Textual replaces stdout/stderr (a server
        # started later would inherit the replaced streams' invalid file descriptors).
        from lossforge.agent.runner import default_sandbox
        from lossforge.sandbox.factory import sandbox_from_config

        self._sandbox = sandbox_from_config(self.config.sandbox, timeout=20)  # plots: the run's backend too
        self._sandbox.warm()
        self._search_sandbox = None if attach else default_sandbox(self.config)

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield CandidatesTable(id="candidates")
                yield ReasoningView(id="reasoning")
            with Vertical(id="right"):
                yield CandidateDetail(id="detail")
                with Horizontal(id="charts"):
                    yield BestChart(id="best")
                    yield Budgets(id="budgets")
                yield EventLog(id="events")
        yield InFlightBar(id="in-flight")
        yield BudgetStrip(id="budget-strip")
        yield Footer()

    def on_resize(self, event) -> None:
        self.screen.set_class(event.size.width < self.NARROW, "narrow")

    def on_mount(self) -> None:
        self.screen.set_class(self.size.width < self.NARROW, "narrow")
        self.sub_title = f"{'attached to' if self.attach else 'running'} {self.run_dir}"
        self.query_one(CandidatesTable).border_title = "candidates"
        if self.attach:
            self.set_interval(0.5, self._follow)
            self._follow()
        else:
            self._run_search()
        self.set_interval(0.3, self._refresh_if_dirty)

    # -- sources -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="search")
    def _run_search(self) -> None:
        from lossforge.agent.runner import run_search

        try:
            summary = run_search(
                self.run_dir,
                self.config,
                on_event=lambda event: self.post_message(SearchEvent(event)),
                stop_event=self.stop_event,
                running_event=self.running,
                sandbox=self._search_sandbox,
                proposer=self.proposer,
            )
        except Exception as error:  # shown to the user; the run's state is in its checkpoints
            self.post_message(SearchFinished(None, f"{type(error).__name__}: {error}"))
        else:
            self.post_message(SearchFinished(summary.__dict__))

    def _follow(self) -> None:
        events, self._events_offset = read_events(self.run_dir / "events.jsonl", self._events_offset)
        for event in events:
            self._handle(event)
        if self.archive is None and not events:
            self._dirty = True  # the archive may exist before any new event

    # -- events --------------------------------------------------------------------------------
    def on_search_event(self, message: SearchEvent) -> None:
        self._handle(message.event)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        log = self.query_one(EventLog)
        reasoning = self.query_one(ReasoningView)
        budgets = self.query_one(Budgets)
        if kind in (EventKind.RUN_STARTED, EventKind.RUN_RESUMED):
            self.target = event.get("target")
            log.write(f"{'resumed' if kind == EventKind.RUN_RESUMED else 'started'}: {event.get('evaluated')} evaluated, target {self.target}")
        elif kind == EventKind.PREPARING:
            log.write(event.get("message", ""))
        elif kind == EventKind.TOKEN:
            reasoning.stream(event.get("text", ""), (event.get("purpose"), event.get("step"), event.get("model")))
        elif kind == EventKind.LLM_CALL:
            self.budget.from_llm_summary(event.get("budget"))
            self._show_budgets()
        elif kind == EventKind.BUDGET:
            self.budget.from_budget_event(event)
            self._show_budgets()
        elif kind == EventKind.PROPOSAL:
            parents = ", ".join(f"#{p}" for p in event.get("parent_ids") or [])
            reasoning.add(f"**#{event['candidate_id']} {event['name']}** ({event.get('operator') or 'proposal'}{'; parents ' + parents if parents else ''})\n\n{event.get('thought') or ''}")
            budgets.set_activity(f"checking #{event['candidate_id']}")
        elif kind == EventKind.REFLECTION:
            reasoning.add(f"> _reflection on #{event['candidate_id']}:_ {event.get('text', '')}")
        elif kind == EventKind.CHECK and not event.get("passed"):
            log.write(f"[yellow]rejected[/] #{event['candidate_id']} {event['name']}: {event.get('summary', '')}")
        elif kind == EventKind.DUPLICATE:
            log.write(f"[dim]duplicate[/] #{event['candidate_id']} {event['name']} behaves like #{event['duplicate_of']}")
        elif kind == EventKind.SCREEN_STARTED:
            budgets.set_activity(f"screening #{event['candidate_id']} on the proxy...")
            budgets.start_screen(self._typical_screen_seconds())
        elif kind == EventKind.EVALUATED:
            fitness = event.get("fitness")
            shown = f"{fitness:+.4f}" if fitness is not None else f"[red]{event.get('status')}[/] {event.get('error')}"
            log.write(f"#{event['candidate_id']} {event['name']}: {shown}")
            budgets.end_screen()
            budgets.set_activity("")
        elif kind == EventKind.ERROR:
            log.write(f"[red]error[/] {event.get('message')}")
        elif kind == EventKind.PAUSED:
            log.write("[b]paused[/] (p to resume)")
        elif kind == EventKind.RESUMED:
            log.write("resumed")
        elif kind == EventKind.RUN_STOPPED:
            self.finished = event
            log.write(f"[b]stopped[/] ({event.get('stop_reason')}): {event.get('evaluated')} evaluated")
            budgets.end_screen()
            budgets.set_activity(f"stopped: {event.get('stop_reason')}")
        if kind in REFRESH_KINDS:
            self._dirty = True

    def on_search_finished(self, message: SearchFinished) -> None:
        if message.error:
            self.query_one(EventLog).write(f"[red]search failed:[/] {message.error}")
            self.notify(message.error, severity="error", timeout=10)
        self._dirty = True

    def _typical_screen_seconds(self) -> float | None:
        """Median screen time of this run's evaluated candidates (the screen reports no steps from its sandbox)."""
        import statistics

        times = [c.timings.get("screen") for c in self.candidates.values() if c.timings.get("screen")]
        return statistics.median(times) if times else None

    # -- archive -> widgets ----------------------------------------------------------------------
    def _open_archive(self) -> Archive | None:
        if self.archive is None and (self.run_dir / "archive.sqlite").exists():
            self.archive = Archive(self.run_dir / "archive.sqlite", readonly=True)
        return self.archive

    def _refresh_if_dirty(self) -> None:
        if not self._dirty or self._open_archive() is None:
            return
        self._dirty = False
        candidates = self.archive.all()
        self.candidates = {c.id: c for c in candidates}
        table = self.query_one(CandidatesTable)
        table.update_rows(candidates)
        self.query_one(BestChart).show(candidates)
        evaluated = sum(1 for c in candidates if c.generation is not None)
        self.budget.set_generations(evaluated, self.target)
        self.budget.set_llm_spent(self.archive.get_meta("llm_budget"))
        self.budget.set_training_seconds(sum(float(c.timings.get("train") or 0) for c in candidates))
        self._show_budgets()
        try:
            self.query_one(InFlightBar).show(in_flight(self.archive, candidates))
        except ValueError as error:  # an archive of another version: say so once, keep the rest of the view
            self.query_one(InFlightBar).show([])
            if not self._flight_warned:
                self._flight_warned = True
                self.notify(str(error), severity="warning")
        self._show_selected()

    def _show_budgets(self) -> None:
        self.query_one(Budgets).show(self.budget)
        self.query_one(BudgetStrip).show(self.budget)

    def _llm_limits(self) -> dict[str, Any] | None:
        """The LLM budget limits of the run: its saved `config.json` when attached, else this config."""
        config = self.config
        saved = self.run_dir / "config.json"
        if self.attach and saved.is_file():
            try:
                config = RunConfig.model_validate_json(saved.read_text())
            except ValueError:  # another version's config: the limits come with the llm_call events
                return None
        return config.proposer.llm.budget.model_dump() if config.proposer.kind == "llm" else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        candidate_id = self.query_one(CandidatesTable).selected_id()
        if candidate_id is None or candidate_id not in self.candidates:
            return
        candidate = self.candidates[candidate_id]
        self.query_one(CandidateDetail).show(candidate)
        if candidate_id != self._shown_id:
            self._shown_id = candidate_id
            self._plot(candidate_id, candidate.name, candidate.code)

    @work(thread=True, exclusive=True, group="plot")
    def _plot(self, candidate_id: int, name: str, code: str) -> None:
        """Sample the loss curve in the sandbox (candidate code never runs in the UI's process)."""
        from lossforge.sandbox.protocol import SandboxError
        from lossforge.tools.shapes import dpo_shape, loss_shape

        try:
            if self._dpo_curve is None:
                self._dpo_curve = dpo_shape(self._sandbox, self.config.proxy.screen.beta, timeout=20)
            if candidate_id not in self._curves and code:
                self._curves[candidate_id] = loss_shape(self._sandbox, code, self.config.proxy.screen.beta, timeout=20)
        except SandboxError:
            self._curves[candidate_id] = None
        self.call_from_thread(self.query_one(LossPlot).show, name, self._curves.get(candidate_id), self._dpo_curve)

    # -- controls ------------------------------------------------------------------------------
    def _controls_allowed(self) -> bool:
        if self.attach:
            self.notify("attached: this view only watches the run (start it with `lossforge tui --run-dir` to steer)", severity="warning")
            return False
        return True

    def action_pause(self) -> None:
        if not self._controls_allowed():
            return
        if self.running.is_set():
            self.running.clear()
            self.notify("pausing after the current step")
        else:
            self.running.set()
            self.notify("resumed")

    def action_stop(self) -> None:
        if not self._controls_allowed():
            return

        def decided(confirmed: bool | None) -> None:
            if confirmed:
                self.stop_event.set()
                self.running.set()
                self.notify("stopping after the current step; the state is saved")

        self.push_screen(ConfirmStop(), decided)

    def action_hint(self) -> None:
        if not self._controls_allowed():
            return

        def send(text: str | None) -> None:
            if text:
                self._with_writer(lambda archive: add_hint(archive, text))
                self.query_one(EventLog).write(f"hint sent: {text}")

        self.push_screen(HintInput(), send)

    def _with_writer(self, action) -> Any:
        writer = Archive(self.run_dir / "archive.sqlite")
        try:
            return action(writer)
        finally:
            writer.close()

    def _toggle(self, kind: str) -> None:
        if not self._controls_allowed():
            return
        candidate_id = self.query_one(CandidatesTable).selected_id()
        if candidate_id is None:
            return
        state = self._with_writer(lambda archive: toggle(archive, candidate_id, kind))
        verb = {"pinned": ("pinned as a parent", "unpinned"), "excluded": ("excluded as a parent", "no longer excluded")}[kind]
        self.query_one(EventLog).write(f"#{candidate_id} {verb[0] if state else verb[1]}")

    def action_pin(self) -> None:
        self._toggle("pinned")

    def action_exclude(self) -> None:
        self._toggle("excluded")

    def action_export(self) -> None:
        from lossforge.rundir.export import render_export

        candidate_id = self.query_one(CandidatesTable).selected_id()
        if candidate_id is None or candidate_id not in self.candidates:
            return
        candidate = self.candidates[candidate_id]
        out = self.run_dir / "exports" / f"{candidate.id}_{candidate.name}.py"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_export(candidate, self.run_dir))
        self.query_one(EventLog).write(f"exported #{candidate.id} to {out}")
        self.notify(f"exported to {out}")

    def action_sort(self) -> None:
        column = self.query_one(CandidatesTable).cycle_sort()
        self.notify(f"sorted by {column}")

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_quit_app(self) -> None:
        self.stop_event.set()
        self.running.set()
        if not self.attach and self.finished is None:
            self.notify("stopping after the current step...")
        self.exit()

    def on_unmount(self) -> None:
        self._sandbox.close()
        if self._search_sandbox is not None:
            self._search_sandbox.close()
        if self.archive is not None:
            self.archive.close()
