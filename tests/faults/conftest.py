"""The fault tests' figures: one tally for the session, written out and shown at the end."""

from __future__ import annotations

import pytest

from tests.faults.figures import FIGURES_KEY, Figures


@pytest.fixture
def figures(pytestconfig: pytest.Config) -> Figures:
    """The session's tally of faults injected, concurrent cancels and orders checked."""
    return pytestconfig.stash.setdefault(FIGURES_KEY, Figures())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES_KEY, None)
    if figures is None:
        return
    path = figures.write()
    terminalreporter.section("fault tests: figures")
    for line in figures.lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {path})")
