"""The ``log`` option: levels, per-logger filters, one line per event, runtime changes."""

from __future__ import annotations

import io
import logging
import re

import pytest

from conduwuit.log import LogControl, LogFilter
from conduwuit.services.diagnostics import Diagnostics


def test_parse_level_and_directives() -> None:
    assert LogFilter.parse("info") == LogFilter(logging.INFO, ())
    parsed = LogFilter.parse("warn,conduwuit.store=debug, conduwuit_service=trace")
    assert parsed.default == logging.WARNING
    assert parsed.loggers == (("conduwuit.store", logging.DEBUG), ("conduwuit.service", 5))


@pytest.mark.parametrize("bad", ["loud", "info,conduwuit.store=verbose", "info, a b=debug"])
def test_invalid_filters_are_rejected_with_a_clear_message(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid log filter"):
        LogFilter.parse(bad)


@pytest.fixture
def control():  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    ctl = LogControl()
    ctl.install("warn,conduwuit.store=debug", stream)
    yield ctl, stream
    root = logging.getLogger()
    root.removeHandler(ctl._handler)  # type: ignore[arg-type]
    ctl.set_filter("warning")
    root.setLevel(logging.WARNING)


def test_filter_applies_per_logger_and_changes_at_runtime(control) -> None:  # type: ignore[no-untyped-def]
    ctl, stream = control
    logging.getLogger("conduwuit.server").info("hidden")
    logging.getLogger("conduwuit.store.db").debug("shown %d", 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG conduwuit\.store\.db: shown 1", lines[0]
    )
    ctl.set_filter("info")
    logging.getLogger("conduwuit.server").info("now visible")
    logging.getLogger("conduwuit.store.db").debug("now hidden")
    output = stream.getvalue()
    assert "now visible" in output and "now hidden" not in output


def test_service_method_rejects_bad_filter_and_keeps_the_old_one(control) -> None:  # type: ignore[no-untyped-def]
    diagnostics = Diagnostics()
    from conduwuit.log import log_control

    log_control.set_filter("info")
    with pytest.raises(ValueError):
        diagnostics.set_log_filter("shouting")
    assert diagnostics.log_filter() == "info"
    diagnostics.set_log_filter("debug")
    assert logging.getLogger().level == logging.DEBUG
    log_control.set_filter("warning")
