"""providers.aws_interruptions: EventBridge events as AWS documents them, and the SQS reader
against moto (the queue found by name, long-poll parameters, delete, typed errors and the
retry layer)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from shoal.providers.aws import AWSProvisioner
from shoal.providers.aws_interruptions import (
    InterruptionQueue,
    MalformedMessage,
    Notice,
    NoticeKind,
    parse_event,
)
from shoal.providers.errors import ProviderError, RetryableError
from shoal.providers.retry import RetryPolicy
from shoal.runtime.clock import SystemClock

# The examples of AWS's documentation ("EC2 Spot Instance interruption notices", "EC2 Instance
# rebalance recommendations", "EventBridge events for EC2 instance state changes", AWS Health
# "scheduledChange" events), shortened to the fields shoal reads and the envelope.
ENVELOPE = {
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789012",
    "account": "123456789012",
    "time": "2026-12-06T12:00:00Z",
    "region": "us-east-2",
}
SPOT_WARNING = {
    **ENVELOPE,
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "resources": ["arn:aws:ec2:us-east-2a:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"},
}
REBALANCE = {
    **ENVELOPE,
    "detail-type": "EC2 Instance Rebalance Recommendation",
    "source": "aws.ec2",
    "detail": {"instance-id": "i-1234567890abcdef0"},
}
STATE_CHANGE = {
    **ENVELOPE,
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "stopping"},
}
SCHEDULED_CHANGE = {
    **ENVELOPE,
    "detail-type": "AWS Health Event",
    "source": "aws.health",
    "detail": {
        "eventArn": "arn:aws:health:us-east-2::event/EC2/...",
        "service": "EC2",
        "eventTypeCode": "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
        "eventTypeCategory": "scheduledChange",
        "affectedEntities": [
            {"entityValue": "i-1234567890abcdef0"},
            {"entityValue": "i-0fedcba0987654321"},
        ],
    },
}
AT = 1796558400.0  # 2026-12-06T12:00:00Z


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (SPOT_WARNING, Notice(NoticeKind.SPOT_INTERRUPTION, ("i-1234567890abcdef0",), AT)),
        (REBALANCE, Notice(NoticeKind.REBALANCE, ("i-1234567890abcdef0",), AT)),
        (
            STATE_CHANGE,
            Notice(NoticeKind.STATE_CHANGE, ("i-1234567890abcdef0",), AT, state="stopping"),
        ),
        (
            SCHEDULED_CHANGE,
            Notice(NoticeKind.SCHEDULED_CHANGE, ("i-1234567890abcdef0", "i-0fedcba0987654321"), AT),
        ),
    ],
)
def test_each_documented_event_is_its_notice(event: dict[str, Any], expected: Notice) -> None:
    notice = parse_event(json.dumps(event))
    assert notice == Notice(
        expected.kind, expected.instance_ids, expected.at, expected.state, ENVELOPE["id"]
    )


@pytest.mark.parametrize(
    "event",
    [
        {**SCHEDULED_CHANGE, "detail": {**SCHEDULED_CHANGE["detail"], "service": "RDS"}},
        {
            **SCHEDULED_CHANGE,
            "detail": {**SCHEDULED_CHANGE["detail"], "eventTypeCategory": "issue"},
        },
        {**SPOT_WARNING, "detail-type": "EC2 Fleet Spot Instance Request Error"},
        {**SPOT_WARNING, "source": "aws.autoscaling"},
    ],
)
def test_an_event_of_no_watched_kind_is_nothing_to_do(event: dict[str, Any]) -> None:
    assert parse_event(json.dumps(event)) is None


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "",
        "[]",
        json.dumps({"source": "aws.ec2"}),  # no detail
        json.dumps({**SPOT_WARNING, "detail": {"instance-action": "terminate"}}),
        json.dumps({**SPOT_WARNING, "detail": {"instance-id": 42}}),
        json.dumps({**STATE_CHANGE, "detail": {"instance-id": "i-1"}}),  # no state
        json.dumps(
            {
                **SCHEDULED_CHANGE,
                "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange"},
            }
        ),
        json.dumps(
            {
                **SCHEDULED_CHANGE,
                "detail": {**SCHEDULED_CHANGE["detail"], "affectedEntities": [{"x": 1}]},
            }
        ),
    ],
)
def test_a_malformed_body_is_refused(body: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_event(body)


# -- the queue on moto ------------------------------------------------------------------------


@pytest.fixture
async def sqs(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=moto_url
    ) as client:
        yield client


class RecordingClock(SystemClock):
    """Real time, but a sleep (a retry's backoff) is recorded and returns at once."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[AWSProvisioner]:
    clock = RecordingClock()
    async with AWSProvisioner(
        "demo", zone="us-east-1a", endpoint_url=moto_url, clock=clock
    ) as provider:
        yield provider


def sleeps(aws: AWSProvisioner) -> list[float]:
    assert isinstance(aws.clock, RecordingClock)
    return aws.clock.sleeps


async def test_the_queue_is_found_by_name_read_and_emptied(aws: AWSProvisioner, sqs: Any) -> None:
    url = (await sqs.create_queue(QueueName="shoal-demo-interruptions"))["QueueUrl"]
    for event in (SPOT_WARNING, REBALANCE):
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    queue = InterruptionQueue.for_provider(aws, "shoal-demo-interruptions", wait_time=0)
    messages = await queue.receive()
    assert await queue.url() == url
    assert sorted(parse_event(m.body).kind for m in messages) == [  # type: ignore[union-attr]
        NoticeKind.REBALANCE,
        NoticeKind.SPOT_INTERRUPTION,
    ]
    for message in messages:
        await queue.delete(message)
    attributes = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    assert set(attributes["Attributes"].values()) == {"0"}


async def test_the_reader_long_polls_for_ten_messages_by_default() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Client:
        async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(("receive_message", kwargs))
            return {}

    async def client() -> Client:
        return Client()

    queue = InterruptionQueue(client, "https://sqs.us-east-1.amazonaws.com/1/q")
    assert await queue.receive() == []
    assert calls == [
        (
            "receive_message",
            {
                "QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 20,
            },
        )
    ]


async def test_a_missing_queue_is_a_typed_error_not_retried(aws: AWSProvisioner) -> None:
    queue = InterruptionQueue.for_provider(aws, "no-such-queue", wait_time=0)
    with pytest.raises(ProviderError) as caught:
        await queue.receive()
    assert not isinstance(caught.value, RetryableError)
    assert "NonExistentQueue" in caught.value.code or "QueueDoesNotExist" in caught.value.code
    assert sleeps(aws) == []


async def test_throttling_is_retried_with_the_providers_backoff(aws: AWSProvisioner) -> None:
    from botocore.exceptions import ClientError

    answers: list[Any] = [
        ClientError({"Error": {"Code": "RequestThrottled", "Message": "slow down"}}, "Receive"),
        ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {}}, "Receive"),
        {"Messages": [{"MessageId": "m", "ReceiptHandle": "r", "Body": "{}"}]},
    ]

    class Client:
        async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return dict(answer)

    async def client() -> Client:
        return Client()

    queue = InterruptionQueue(
        client,
        "https://sqs/1/q",
        predicate=aws.retryPredicate,
        retry=RetryPolicy(attempts=5, initial=1, maximum=4, deadline=60),
        sleep=aws.clock.sleep,
    )
    (message,) = await queue.receive()
    assert message.receipt_handle == "r"
    assert len(sleeps(aws)) == 2
