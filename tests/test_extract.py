"""Relay payload -> job record: every extraction rule of the contract, and every refusal names its field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.extract import ExtractionError, coerce_run_attempt, extract
from ingest.routes import parse_json
from sql.records import JobRecord
from tests.conftest import RELAY_FIXTURES, relay_payload

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def _extract(body: Any) -> JobRecord:
    return extract(body, received_at=NOW)


def _workflow(body: dict[str, Any]) -> dict[str, Any]:
    return body["untrusted"]["callback_payload"]["workflow"]


def _refusal(body: Any) -> str:
    with pytest.raises(ExtractionError) as caught:
        _extract(body)
    return str(caught.value)


def test_in_progress_pull_request_record() -> None:
    record = _extract(relay_payload("01_pr_in_progress"))
    assert record == JobRecord(
        key="acme-accel/torch-acme/6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f/acme-ci/test-linux/58410000001",
        downstream_repo="acme-accel/torch-acme", downstream_level="L4", event_type="pull_request",
        delivery_id="6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f", upstream_repo="pytorch/pytorch", pr_number=170001,
        head_sha="3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b", workflow_name="acme-ci", job_name="test-linux",
        check_run_id="58410000001", run_id="19000000001", run_attempt=1,
        workflow_url="https://github.com/acme-accel/torch-acme/actions/runs/19000000001", schema_version="1",
        status="in_progress", started_at=datetime(2026, 11, 20, 10, 3, 11, tzinfo=UTC), queue_time_s=42.317,
        received_at=NOW,
    )


def test_completed_record_carries_conclusion_counts_and_computed_total() -> None:
    record = _extract(relay_payload("02_pr_completed_success"))
    assert (record.status, record.conclusion) == ("completed", "success")
    assert (record.tests_passed, record.tests_failed, record.tests_skipped, record.tests_total) == (1203, 0, 17, 1220)
    assert record.execution_time_s == 2499.6
    assert record.completed_at == datetime(2026, 11, 20, 10, 44, 50, tzinfo=UTC)
    assert record.artifact_url.endswith("/artifacts/4400001")


def test_absent_and_null_fields_are_not_written() -> None:
    fields = _extract(relay_payload("02_pr_completed_success")).present_fields()
    # started_at and queue_time are null in the completed callback: they must not erase stored values.
    for absent in ("started_at", "queue_time_s", "ref"):
        assert absent not in fields
    assert fields["first_received_at"] == fields["received_at"] == "2026-11-20T12:00:00.000Z"


def test_given_total_wins_over_the_sum() -> None:
    assert _extract(relay_payload("07_pr_l3_matrix_leg_a")).tests_total == 803
    body = relay_payload("07_pr_l3_matrix_leg_a")
    _workflow(body)["test_results"] = {"passed": 1, "failed": 2, "skipped": 3, "total": "lots"}
    assert _extract(body).tests_total == 6  # a total that is not a number falls back to the sum


def test_partial_counts_sum_what_is_given() -> None:
    body = relay_payload("02_pr_completed_success")
    _workflow(body)["test_results"] = {"passed": 5}
    record = _extract(body)
    assert (record.tests_passed, record.tests_failed, record.tests_total) == (5, None, 5)


def test_no_test_results_means_no_counts() -> None:
    record = _extract(relay_payload("08_pr_l3_matrix_leg_b"))
    assert (record.tests_passed, record.tests_total, record.conclusion) == (None, None, "timed_out")


def test_conclusion_counts_and_end_time_only_from_completed_callbacks() -> None:
    body = relay_payload("01_pr_in_progress")
    workflow = _workflow(body)
    workflow.update(conclusion="failure", test_results={"passed": 1, "failed": 1, "skipped": 0},
                    completed_at="2026-11-20T10:04:00Z")
    record = _extract(body)
    assert (record.conclusion, record.tests_passed, record.tests_total) == (None, None, None)
    assert record.completed_at is None


def test_an_in_progress_callback_carrying_execution_and_queue_time_stores_both() -> None:
    body = relay_payload("01_pr_in_progress")
    body["trusted"]["ci_metrics"] = {"queue_time": 12.5, "execution_time": 99.0}
    record = _extract(body)
    assert (record.status, record.queue_time_s, record.execution_time_s) == ("in_progress", 12.5, 99.0)


@pytest.mark.parametrize(("event_type", "payload", "expected"), [
    # Another event whose payload carries a pull request: a PR result, the event stored as given.
    ("pull_request_target", None, ("pull_request_target", 170001, "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b")),
    ("merge_group", None, ("merge_group", 170001, "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b")),
    # No pull request: a trunk result, its commit from head_sha or after, its ref kept.
    ("workflow_dispatch", {"head_sha": "a" * 40, "ref": "refs/heads/main"}, ("workflow_dispatch", 0, "a" * 40)),
    ("schedule", {"after": "b" * 40}, ("schedule", 0, "b" * 40)),
    ("release", {"release": {"tag_name": "v2.9.0"}, "ref": {"odd": 1}}, ("release", 0, "")),
    ("Custom Event 1", {}, ("Custom Event 1", 0, "")),
])
def test_any_well_formed_event_type_is_stored_pr_or_trunk_by_the_payload(
        event_type: str, payload: dict[str, Any] | None, expected: tuple[str, int, str]) -> None:
    body = relay_payload("01_pr_in_progress")
    callback = body["untrusted"]["callback_payload"]
    callback["event_type"] = event_type
    if payload is not None:
        callback["payload"] = {"repository": callback["payload"]["repository"], **payload}
    record = _extract(body)
    assert (record.event_type, record.pr_number, record.head_sha) == expected
    assert record.upstream_repo == "pytorch/pytorch"
    if event_type == "workflow_dispatch":
        assert record.ref == "refs/heads/main"


def test_a_pull_request_event_without_its_pull_request_is_still_refused() -> None:
    body = relay_payload("01_pr_in_progress")
    del body["untrusted"]["callback_payload"]["payload"]["pull_request"]
    assert "payload.pull_request must be a JSON object, got missing" in _refusal(body)
    body["untrusted"]["callback_payload"]["event_type"] = "merge_group"
    body["untrusted"]["callback_payload"]["payload"]["head_sha"] = "not hex"
    assert "payload.head_sha must be a hexadecimal commit SHA" in _refusal(body)


@pytest.mark.parametrize(("given", "expected"), [
    ("2", 2), (2, 2), ("1", 1), (3.0, 3), (" 4 ", 4), (None, 1), ("", 1), ("abc", 1), ("0", 1), (0, 1),
    (-2, 1), ("-2", 1), (2.5, 1), (True, 1), ([], 1), ({}, 1), ("1e3", 1), (2**40, 1), ("٣", 1),
    (float("nan"), 1),
])
def test_run_attempt_coercion(given: Any, expected: int) -> None:
    assert coerce_run_attempt(given) == expected
    body = relay_payload("05_pr_rerun_attempt2_in_progress")
    if given is None:
        del _workflow(body)["run_attempt"]
    else:
        _workflow(body)["run_attempt"] = given
    assert _extract(body).run_attempt == expected


def test_push_event_uses_after_and_ref_and_pr_zero() -> None:
    record = _extract(relay_payload("11_push_trunk_failure"))
    assert (record.event_type, record.pr_number) == ("push", 0)
    assert record.head_sha == "c" * 40
    assert record.ref == "refs/heads/main"


@pytest.mark.parametrize("event_type", ["nightly", "periodic"])
def test_self_reported_scheduled_runs(event_type: str) -> None:
    body = relay_payload("13_nightly_completed_failure")
    body["untrusted"]["callback_payload"]["event_type"] = event_type
    record = _extract(body)
    assert (record.event_type, record.pr_number, record.head_sha) == (event_type, 0, "e" * 40)
    assert record.check_run_id == "19000077777-1"
    assert record.started_at is not None and record.completed_at is not None
    assert record.queue_time_s is None and record.execution_time_s is None


def test_numeric_ids_are_coerced_to_strings() -> None:
    record = _extract(relay_payload("12_numeric_ids_variant"))
    assert (record.check_run_id, record.schema_version, record.run_attempt) == ("58410000001", "1", 1)
    # The same job as fixture 02 under the same key, whatever the id's JSON type.
    assert record.key == _extract(relay_payload("02_pr_completed_success")).key
    body = relay_payload("01_pr_in_progress")
    _workflow(body)["run_id"] = 19000000001
    body["untrusted"]["callback_payload"]["delivery_id"] = 12345
    record = _extract(body)
    assert (record.run_id, record.delivery_id) == ("19000000001", "12345")


def test_defaults_event_type_and_upstream_repo() -> None:
    body = relay_payload("01_pr_in_progress")
    callback = body["untrusted"]["callback_payload"]
    del callback["event_type"]
    del callback["payload"]["repository"]
    del body["trusted"]["ci_metrics"]
    del body["trusted"]["downstream_repo_level"]
    record = _extract(body)
    assert (record.event_type, record.upstream_repo) == ("pull_request", "pytorch/pytorch")
    assert (record.queue_time_s, record.downstream_level) == (None, None)


def test_downstream_repo_only_from_trusted() -> None:
    body = relay_payload("01_pr_in_progress")
    callback = body["untrusted"]["callback_payload"]
    callback["verified_repo"] = "evil/impostor"
    callback["downstream_repo"] = "evil/impostor"
    callback["workflow"]["downstream_repo"] = "evil/impostor"
    record = _extract(body)
    assert record.downstream_repo == "acme-accel/torch-acme"
    assert record.key.startswith("acme-accel/torch-acme/")


def test_timestamps_come_from_the_downstream_and_are_normalised() -> None:
    body = relay_payload("01_pr_in_progress")
    _workflow(body)["started_at"] = "2026-11-20T12:03:11+02:00"
    record = _extract(body)
    assert record.started_at == datetime(2026, 11, 20, 10, 3, 11, tzinfo=UTC)
    assert record.received_at == NOW


def test_untrusted_strings_are_stored_as_given() -> None:
    body = relay_payload("01_pr_in_progress")
    _workflow(body)["job_name"] = "test (linux, 1/2) <script>alert(1)</script> **bold** ✓"
    assert _extract(body).job_name == "test (linux, 1/2) <script>alert(1)</script> **bold** ✓"


# ---- refusals: every one is an ExtractionError naming the field ----

@pytest.mark.parametrize(("fixture", "message"), [
    ("bad_missing_job_name", "untrusted.callback_payload.workflow.job_name is required"),
    ("bad_unknown_status", "untrusted.callback_payload.workflow.status must be one of in_progress, completed"),
])
def test_bad_fixtures(fixture: str, message: str) -> None:
    assert message in _refusal(relay_payload(fixture))


@pytest.mark.parametrize("path", [
    ("untrusted", "callback_payload", "delivery_id"),
    ("untrusted", "callback_payload", "workflow", "name"),
    ("untrusted", "callback_payload", "workflow", "job_name"),
    ("untrusted", "callback_payload", "workflow", "check_run_id"),
    ("untrusted", "callback_payload", "workflow", "status"),
    ("trusted", "verified_repo"),
])
@pytest.mark.parametrize("how", ["missing", "null", "empty"])
def test_required_fields(path: tuple[str, ...], how: str) -> None:
    body = relay_payload("01_pr_in_progress")
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    if how == "missing":
        del parent[path[-1]]
    else:
        parent[path[-1]] = None if how == "null" else ""
    message = _refusal(body)
    assert message.startswith(".".join(path))
    assert ("required" if how != "empty" else "empty") in message


@pytest.mark.parametrize(("body", "message"), [
    ([], "body must be a JSON object, got a JSON array"),
    ("text", "body must be a JSON object, got a JSON string"),
    (3, "body must be a JSON object, got a JSON number"),
    (None, "body must be a JSON object, got missing"),
    ({}, "trusted must be a JSON object, got missing"),
    ({"trusted": [], "untrusted": {}}, "trusted must be a JSON object, got a JSON array"),
    ({"trusted": {"verified_repo": "a/b"}, "untrusted": "x"}, "untrusted must be a JSON object"),
    ({"trusted": {"verified_repo": "a/b"}, "untrusted": {}}, "untrusted.callback_payload must be a JSON object"),
])
def test_wrong_shape(body: Any, message: str) -> None:
    assert message in _refusal(body)


# (field path, a wrong value, part of the message)
WRONG_TYPES: list[tuple[tuple[str, ...], Any, str]] = [
    (("trusted", "verified_repo"), 5, "trusted.verified_repo must be a string"),
    (("trusted", "verified_repo"), "no-slash", "trusted.verified_repo must look like owner/name"),
    (("trusted", "verified_repo"), "a/b/c", "must look like owner/name"),
    (("trusted", "downstream_repo_level"), "L9", "trusted.downstream_repo_level must be one of"),
    (("trusted", "downstream_repo_level"), 4, "trusted.downstream_repo_level must be a string"),
    (("trusted", "ci_metrics"), "fast", "trusted.ci_metrics must be a JSON object"),
    (("trusted", "ci_metrics", "queue_time"), "42", "trusted.ci_metrics.queue_time must be a number"),
    (("trusted", "ci_metrics", "queue_time"), -1, "trusted.ci_metrics.queue_time must be between"),
    (("trusted", "ci_metrics", "queue_time"), True, "trusted.ci_metrics.queue_time must be a number"),
    (("untrusted", "callback_payload", "event_type"), "e" * 65, "event_type is longer than 64 characters"),
    (("untrusted", "callback_payload", "event_type"), "   ", "event_type must be printable text"),
    (("untrusted", "callback_payload", "event_type"), "push\n", "event_type must be printable text"),
    (("untrusted", "callback_payload", "event_type"), "pu\u202esh", "event_type must be printable text"),
    (("untrusted", "callback_payload", "event_type"), "", "event_type must be printable text"),
    (("untrusted", "callback_payload", "event_type"), 1, "event_type must be a string"),
    (("untrusted", "callback_payload", "delivery_id"), {"id": 1}, "delivery_id must be a string"),
    (("untrusted", "callback_payload", "delivery_id"), True, "delivery_id must be a string"),
    (("untrusted", "callback_payload", "payload"), [], "callback_payload.payload must be a JSON object"),
    (("untrusted", "callback_payload", "payload", "pull_request"), None, "payload.pull_request must be a JSON"),
    (("untrusted", "callback_payload", "payload", "pull_request", "number"), "x1", "number must be a positive"),
    (("untrusted", "callback_payload", "payload", "pull_request", "number"), 0, "number must be a positive"),
    (("untrusted", "callback_payload", "payload", "pull_request", "number"), None, "number is required"),
    (("untrusted", "callback_payload", "payload", "pull_request", "head", "sha"), 7, "head.sha must be a string"),
    (("untrusted", "callback_payload", "payload", "pull_request", "head", "sha"), "not hex!", "commit SHA"),
    (("untrusted", "callback_payload", "payload", "repository", "full_name"), ["x"], "full_name must be a str"),
    (("untrusted", "callback_payload", "workflow"), "wf", "callback_payload.workflow must be a JSON object"),
    (("untrusted", "callback_payload", "workflow", "status"), 1, "workflow.status must be a string"),
    (("untrusted", "callback_payload", "workflow", "status"), "COMPLETED", "workflow.status must be one of"),
    (("untrusted", "callback_payload", "workflow", "conclusion"), 0, "never reached"),
    (("untrusted", "callback_payload", "workflow", "name"), ["a"], "workflow.name must be a string"),
    (("untrusted", "callback_payload", "workflow", "url"), 5, "workflow.url must be a string"),
    (("untrusted", "callback_payload", "workflow", "job_name"), {}, "workflow.job_name must be a string"),
    (("untrusted", "callback_payload", "workflow", "check_run_id"), 1.5, "check_run_id must be a string"),
    (("untrusted", "callback_payload", "workflow", "check_run_id"), [1], "check_run_id must be a string"),
    (("untrusted", "callback_payload", "workflow", "run_id"), {}, "workflow.run_id must be a string"),
    (("untrusted", "callback_payload", "workflow", "schema_version"), [], "schema_version must be a string"),
    (("untrusted", "callback_payload", "workflow", "started_at"), 1700000000, "started_at must be a string"),
    (("untrusted", "callback_payload", "workflow", "started_at"), "yesterday", "started_at must be an ISO-8601"),
    (("untrusted", "callback_payload", "workflow", "started_at"), "2026-13-40T99:00:00Z", "ISO-8601"),
    (("untrusted", "callback_payload", "workflow", "started_at"), "0001-01-01T00:00:00+05:00", "ISO-8601"),
    (("untrusted", "callback_payload", "workflow", "started_at"), "1900-01-01T00:00:00Z", "out of range"),
    (("untrusted", "callback_payload", "workflow", "artifact_url"), True, "artifact_url must be a string"),
]
# Fields only read from completed callbacks are checked on a completed fixture.
COMPLETED_WRONG_TYPES: list[tuple[tuple[str, ...], Any, str]] = [
    (("untrusted", "callback_payload", "workflow", "conclusion"), 0, "workflow.conclusion must be a string"),
    (("untrusted", "callback_payload", "workflow", "completed_at"), "soon", "completed_at must be an ISO-8601"),
    (("untrusted", "callback_payload", "workflow", "test_results"), [1], "test_results must be a JSON object"),
    (("untrusted", "callback_payload", "workflow", "test_results", "passed"), "5", "passed must be a non-negative"),
    (("untrusted", "callback_payload", "workflow", "test_results", "failed"), -1, "failed must be a non-negative"),
    (("untrusted", "callback_payload", "workflow", "test_results", "skipped"), 1.5, "skipped must be a non-neg"),
    (("untrusted", "callback_payload", "workflow", "test_results", "total"), -3, "total must be a non-negative"),
    (("trusted", "ci_metrics", "execution_time"), "slow", "execution_time must be a number"),
    (("trusted", "ci_metrics", "execution_time"), 1e300, "execution_time must be between"),
]


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    parent = body
    for part in path[:-1]:
        parent = parent.setdefault(part, {})
    parent[path[-1]] = value


@pytest.mark.parametrize(("path", "value", "message"),
                         [case for case in WRONG_TYPES if case[2] != "never reached"])
def test_wrong_types_in_every_field(path: tuple[str, ...], value: Any, message: str) -> None:
    body = relay_payload("01_pr_in_progress")
    _set(body, path, value)
    assert message in _refusal(body)


@pytest.mark.parametrize(("path", "value", "message"), COMPLETED_WRONG_TYPES)
def test_wrong_types_in_completed_fields(path: tuple[str, ...], value: Any, message: str) -> None:
    body = relay_payload("02_pr_completed_success")
    _set(body, path, value)
    assert message in _refusal(body)


def test_push_and_nightly_sha_fields_are_checked() -> None:
    body = relay_payload("11_push_trunk_failure")
    body["untrusted"]["callback_payload"]["payload"]["after"] = 42
    assert "untrusted.callback_payload.payload.after must be a string" in _refusal(body)
    body = relay_payload("13_nightly_completed_failure")
    body["untrusted"]["callback_payload"]["payload"]["head_sha"] = "zz"
    assert "untrusted.callback_payload.payload.head_sha must be a hexadecimal" in _refusal(body)


@pytest.mark.parametrize(("path", "limit"), [
    (("untrusted", "callback_payload", "delivery_id"), 200),
    (("untrusted", "callback_payload", "workflow", "name"), 300),
    (("untrusted", "callback_payload", "workflow", "job_name"), 300),
    (("untrusted", "callback_payload", "workflow", "check_run_id"), 200),
    (("untrusted", "callback_payload", "workflow", "run_id"), 200),
    (("untrusted", "callback_payload", "workflow", "url"), 2048),
    (("untrusted", "callback_payload", "payload", "repository", "full_name"), 140),
])
def test_untrusted_string_length_limits(path: tuple[str, ...], limit: int) -> None:
    at_limit = relay_payload("01_pr_in_progress")
    value = ("o/" + "r" * (limit - 2)) if path[-1] == "full_name" else "x" * limit
    _set(at_limit, path, value)
    _extract(at_limit)  # exactly at the limit is accepted
    over = relay_payload("01_pr_in_progress")
    _set(over, path, value + "x")
    message = _refusal(over)
    assert message == f"{'.'.join(path)} is longer than {limit} characters ({limit + 1})"


def test_huge_numeric_id_is_length_limited() -> None:
    body = relay_payload("01_pr_in_progress")
    _workflow(body)["check_run_id"] = 10**400
    assert "check_run_id is longer than 200 characters" in _refusal(body)


# ---- the body -> JSON step the endpoint runs before extraction ----

@pytest.mark.parametrize(("raw", "message"), [
    (b"", "the body is empty"),
    (b"   \n", "the body is empty"),
    (b"{not json", "the body is not JSON"),
    (b"\xff\xfe{}", "the body is not valid UTF-8 (byte 0)"),
    (b'{"a": "\xc3\x28"}', "not valid UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"a": NaN}', "NaN is not valid JSON"),
    (b'{"a": -Infinity}', "-Infinity is not valid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
])
def test_parse_json_refusals(raw: bytes, message: str) -> None:
    with pytest.raises(ExtractionError) as caught:
        parse_json(raw)
    assert message in str(caught.value)


def test_parse_json_accepts_a_fixture() -> None:
    raw = (RELAY_FIXTURES / "01_pr_in_progress.json").read_bytes()
    assert parse_json(raw) == relay_payload("01_pr_in_progress")
