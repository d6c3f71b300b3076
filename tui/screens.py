"""Modal screens: confirm before stopping, type a hint for the agent."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ConfirmStop(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop Grid { grid-size: 2; grid-gutter: 1 2; width: 60; height: auto; padding: 1 2; border: thick $error; background: $surface; }
    ConfirmStop Label { column-span: 2; width: 100%; }
    """
    BINDINGS = [("y", "confirm", "Yes"), ("n,escape", "cancel", "No")]

    def compose(self) -> ComposeResult:
        with Grid():
            yield Label("Stop the search after the current step? The state is saved; `lossforge run` resumes it.")
            yield Button("Stop (y)", variant="error", id="yes")
            yield Button("Keep going (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class HintInput(ModalScreen[str | None]):
    DEFAULT_CSS = """
    HintInput { align: center middle; }
    HintInput Vertical { width: 70; height: auto; padding: 1 2; border: thick $primary; background: $surface; }
    """
    BINDINGS = [("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("A hint for the agent's next proposal (Enter to send, Esc to cancel):")
            yield Input(placeholder="e.g. try a tanh gate on the rejected log-ratio", id="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
