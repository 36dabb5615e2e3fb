"""The shared logfmt line: downstream text stays inside its own quoted value."""

from __future__ import annotations

import shlex

import pytest

from bot.logfmt import get_logger
from renderers.logfmt import kv


def test_plain_values_stay_bare_and_hostile_ones_are_quoted_whole() -> None:
    hostile = 'x" forged=1\nevent=result_stored'
    line = kv(event="result_refused", reason="rate limited", repo=hostile, count=3, empty="")
    assert "\n" not in line and line.startswith("event=result_refused ")
    assert dict(part.split("=", 1) for part in shlex.split(line)) == {
        "event": "result_refused", "reason": "rate limited", "repo": 'x" forged=1\\nevent=result_stored',
        "count": "3", "empty": ""}


def test_long_values_are_cut() -> None:
    assert len(kv(name="y " * 1000)) < 520


def test_the_bot_logger_names_the_event_and_keeps_an_event_field_apart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="oot.test")
    get_logger("oot.test").info("Delivery accepted", extra={"event": "push", "delivery_id": "d 1"})
    assert caplog.messages == ['event=delivery_accepted field_event=push delivery_id="d 1"']
