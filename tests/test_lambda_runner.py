"""The Lambda event source mapping stand-in (tests/lambda_runner.py) against moto's DynamoDB stream: events
shaped as Lambda delivers them, batch size, per-shard order, whole-batch retry on a function error, and
``batchItemFailures`` honoured by retrying from the lowest failed record."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lambda_runner import EventSourceMapping, MappingConfig, resume_index


@pytest.fixture(scope="module")
def streams(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodbstreams", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def table(dynamodb_client: Any) -> str:
    from ingest.dynamo_schema import create_table

    name = f"oot-lambda-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb_client, name)
    return name


def put(client: Any, table: str, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        client.put_item(TableName=table, Item={"key": {"S": f"k{index:03d}"}, "n": {"N": str(index)},
                                               "blob": {"B": bytes([index % 256, 0])}})


class Recorder:
    """A function that records every event and answers as ``answer(event, call)`` says."""

    def __init__(self, answer: Callable[[dict[str, Any], int], Any] = lambda event, call: None) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer = answer

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        assert context.get_remaining_time_in_millis() > 0 and context.aws_request_id
        self.events.append(event)
        return self.answer(event, len(self.events))

    def keys(self, event: dict[str, Any]) -> list[str]:
        return [record["dynamodb"]["Keys"]["key"]["S"] for record in event["Records"]]


@pytest.fixture
def run(streams: Any, dynamodb_client: Any) -> Iterator[Callable[..., EventSourceMapping]]:
    """``run(table, function, **config)``: a mapping polling the table's stream in a thread until the test ends."""
    started: list[tuple[EventSourceMapping, threading.Thread]] = []

    def start(table: str, function: Any, **config: Any) -> EventSourceMapping:
        arn = dynamodb_client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        config.setdefault("poll_interval_s", 0.05)
        config.setdefault("retry_initial_s", 0.01)
        mapping = EventSourceMapping(streams, arn, function, MappingConfig(**config))
        thread = threading.Thread(target=mapping.run, daemon=True)
        thread.start()
        started.append((mapping, thread))
        return mapping

    yield start
    for mapping, thread in started:
        mapping.stop.set()
        thread.join(10)


def wait_for(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_events_carry_the_records_as_lambda_delivers_them_in_shard_order_and_batches(
        table: str, dynamodb_client: Any, run: Callable[..., EventSourceMapping]) -> None:
    put(dynamodb_client, table, 7)
    function = Recorder()
    mapping = run(table, function, batch_size=3)
    wait_for(lambda: mapping.stats.records == 7, "the seven records were not delivered")
    assert [len(event["Records"]) for event in function.events] == [3, 3, 1]
    assert [key for event in function.events for key in function.keys(event)] == [f"k{i:03d}" for i in range(7)]
    record = function.events[0]["Records"][1]
    arn = dynamodb_client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    assert record["eventSourceARN"] == arn and f":table/{table}/stream/" in arn
    assert (record["eventSource"], record["eventName"], record["awsRegion"]) == ("aws:dynamodb", "INSERT", "us-east-1")
    image = record["dynamodb"]
    assert isinstance(image["ApproximateCreationDateTime"], int) and image["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert image["NewImage"]["n"] == {"N": "1"} and image["NewImage"]["blob"] == {"B": "AQA="}, "base64, as JSON"
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for e in function.events for r in e["Records"]]
    assert sequences == sorted(sequences)
    # Later writes come in later events, from where the mapping stopped.
    put(dynamodb_client, table, 2, start=7)
    wait_for(lambda: mapping.stats.records == 9, "the later records were not delivered")
    assert function.keys(function.events[-1]) == ["k007", "k008"]


def test_batch_item_failures_retry_from_the_lowest_failed_record(
        table: str, dynamodb_client: Any, run: Callable[..., EventSourceMapping]) -> None:
    put(dynamodb_client, table, 6)

    def answer(event: dict[str, Any], call: int) -> Any:
        records = event["Records"]
        if call == 1:  # records 2 and 4 failed: Lambda resumes at the lower one
            return {"batchItemFailures": [{"itemIdentifier": records[4]["dynamodb"]["SequenceNumber"]},
                                          {"itemIdentifier": records[2]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    function = Recorder(answer)
    mapping = run(table, function, batch_size=10)
    wait_for(lambda: mapping.stats.records == 6, "the batch was not completed")
    assert [function.keys(e) for e in function.events] == [[f"k{i:03d}" for i in range(6)],
                                                           [f"k{i:03d}" for i in range(2, 6)]]
    assert mapping.stats.partial_failures == 1


@pytest.mark.parametrize("failure", ["raises", "empty identifier", "unknown identifier"])
def test_a_function_error_or_a_bad_identifier_retries_the_whole_batch(
        failure: str, table: str, dynamodb_client: Any, run: Callable[..., EventSourceMapping]) -> None:
    put(dynamodb_client, table, 3)

    def answer(event: dict[str, Any], call: int) -> Any:
        if call > 2:
            return None  # no answer: success
        if failure == "raises":
            raise RuntimeError("the warehouse is down")
        return {"batchItemFailures": [{"itemIdentifier": "" if failure == "empty identifier" else "12345"}]}

    function = Recorder(answer)
    mapping = run(table, function, batch_size=10)
    wait_for(lambda: mapping.stats.records == 3, "the batch was not completed")
    assert [function.keys(e) for e in function.events] == [["k000", "k001", "k002"]] * 3


def test_a_batching_window_gathers_records_and_retries_can_run_out(
        table: str, dynamodb_client: Any, run: Callable[..., EventSourceMapping]) -> None:
    function = Recorder(lambda event, call: {"batchItemFailures": [{"itemIdentifier": None}]} if call == 1 else {})
    mapping = run(table, function, batch_size=100, batching_window_s=1.0, max_retries=0)
    put(dynamodb_client, table, 2)
    time.sleep(0.1)  # within the window: joins the same batch
    put(dynamodb_client, table, 2, start=2)
    wait_for(lambda: mapping.stats.skipped_batches == 1, "the failed batch was not skipped")
    assert function.keys(function.events[0]) == ["k000", "k001", "k002", "k003"]
    put(dynamodb_client, table, 1, start=4)
    wait_for(lambda: mapping.stats.records == 1, "the next record was not delivered")
    assert function.keys(function.events[-1]) == ["k004"], "retries exhausted: the batch was discarded, as Lambda does"


def test_resume_index_reads_the_answer_as_lambda_does() -> None:
    batch = [{"dynamodb": {"SequenceNumber": str(s)}} for s in (10, 11, 12)]
    assert [resume_index(answer, batch) for answer in (None, {}, {"batchItemFailures": None}, [],
                                                        {"batchItemFailures": []})] == [None] * 5
    assert resume_index({"batchItemFailures": [{"itemIdentifier": "11"}]}, batch) == 1
    assert resume_index({"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "10"}]}, batch) == 0
    assert resume_index({"batchItemFailures": [{"id": "11"}]}, batch) == 0, "a bad key name: the whole batch"
