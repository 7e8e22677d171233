"""EC2 interruption notices from an SQS queue fed by EventBridge, as Karpenter reads them.

EventBridge rules (``deploy/interruption-queue.yaml``) send four kinds of event to one SQS
queue; each message body is the EventBridge event as JSON, and ``parse_event`` turns it into
a typed ``Notice``:

=============================================  ===========  ==================================
event (``source``, ``detail-type``)            kind         instance ids from
=============================================  ===========  ==================================
aws.ec2, EC2 Spot Instance Interruption        spot_        ``detail.instance-id`` (the
Warning                                        interruption 2-minute notice)
aws.ec2, EC2 Instance Rebalance Recommendation rebalance    ``detail.instance-id``
aws.ec2, EC2 Instance State-change             state_change ``detail.instance-id``, with
Notification                                                ``detail.state``
aws.health, AWS Health Event (service EC2,     scheduled_   ``detail.affectedEntities[]
eventTypeCategory scheduledChange)             change       .entityValue``
=============================================  ===========  ==================================

Any other well-formed event (another Health category, another service) is ``None``: nothing
to do. A body that is not JSON, or an event of a watched kind without its instance id, is
``MalformedMessage``.

``InterruptionQueue`` long-polls the queue (``ReceiveMessage``, ``WaitTimeSeconds`` 20, up to
10 messages) and deletes a message (``DeleteMessage``) only when the caller has handled it:
a daemon that dies in between gets the message again once its visibility timeout ends
(at-least-once delivery), so handling must be idempotent. A queue given by name is looked up
once (``GetQueueUrl``). Every call goes through the provider's retry layer
(``providers.retry`` with the provider's ``retryPredicate``), its botocore errors mapped by
``providers.aws_errors.translate_error`` like every other AWS call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from shoal.providers.aws_errors import translate_error
from shoal.providers.errors import is_retryable
from shoal.providers.retry import RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from shoal.providers.aws import AWSProvisioner

__all__ = [
    "InterruptionQueue",
    "MalformedMessage",
    "Notice",
    "NoticeKind",
    "QueueMessage",
    "parse_event",
]

log = logging.getLogger(__name__)

WAIT_TIME = 20  # seconds: SQS's longest long poll
MAX_MESSAGES = 10  # SQS's most per ReceiveMessage


class NoticeKind(enum.StrEnum):
    SPOT_INTERRUPTION = "spot_interruption"
    REBALANCE = "rebalance"
    STATE_CHANGE = "state_change"
    SCHEDULED_CHANGE = "scheduled_change"


class MalformedMessage(ValueError):
    """A message body that is not an EventBridge event shoal can read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    instance_ids: tuple[str, ...]
    at: float | None = None  # the event's time, epoch seconds (None: not given)
    state: str = ""  # state_change: the instance's new state (stopping, terminated, ...)
    event_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str


_EC2_KINDS = {
    "EC2 Spot Instance Interruption Warning": NoticeKind.SPOT_INTERRUPTION,
    "EC2 Instance Rebalance Recommendation": NoticeKind.REBALANCE,
    "EC2 Instance State-change Notification": NoticeKind.STATE_CHANGE,
}


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _instance_id(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("i-"):
        raise MalformedMessage(f"not an instance id: {value!r}")
    return value


def parse_event(body: str) -> Notice | None:
    """The notice an EventBridge event's JSON says, None for an event of no watched kind;
    raises ``MalformedMessage``."""
    try:
        event = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        raise MalformedMessage("not an EventBridge event (no detail object)")
    source, detail_type, detail = event.get("source"), event.get("detail-type"), event["detail"]
    common = {"at": _time(event.get("time")), "event_id": str(event.get("id", ""))}
    if source == "aws.ec2" and detail_type in _EC2_KINDS:
        kind = _EC2_KINDS[detail_type]
        ids = (_instance_id(detail.get("instance-id")),)
        state = ""
        if kind is NoticeKind.STATE_CHANGE:
            state = detail.get("state")
            if not isinstance(state, str) or not state:
                raise MalformedMessage("a state-change notification without a state")
        return Notice(kind, ids, state=state, **common)
    if source == "aws.health" and detail_type == "AWS Health Event":
        if detail.get("service") != "EC2" or detail.get("eventTypeCategory") != "scheduledChange":
            return None
        entities = detail.get("affectedEntities")
        if not isinstance(entities, list) or not entities:
            raise MalformedMessage("a scheduled change without affected entities")
        ids = tuple(
            _instance_id(e.get("entityValue") if isinstance(e, dict) else None) for e in entities
        )
        return Notice(NoticeKind.SCHEDULED_CHANGE, ids, **common)
    return None


class InterruptionQueue:
    """One SQS queue of interruption events: ``receive()`` long-polls it, ``delete()`` drops
    a handled message. ``client`` returns the (shared) SQS client; errors come out typed and
    are retried by ``retry`` on what ``predicate`` accepts, sleeping with ``sleep``."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Any]],
        queue: str,
        *,
        predicate: Callable[[BaseException], bool] = is_retryable,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        wait_time: int = WAIT_TIME,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        self._client = client
        self.queue = queue
        self._url = queue if queue.startswith(("https://", "http://")) else None
        self.predicate = predicate
        self.retry = retry or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self.wait_time = wait_time
        self.max_messages = max_messages

    @classmethod
    def for_provider(
        cls, provider: AWSProvisioner, queue: str, *, retry: RetryPolicy | None = None, **kw: Any
    ) -> InterruptionQueue:
        """The queue read with ``provider``'s SQS client (its region, endpoint and retry
        predicate), sleeping on its clock."""
        return cls(
            provider.sqs_client,
            queue,
            predicate=provider.retryPredicate,
            retry=retry,
            sleep=provider.clock.sleep,
            **kw,
        )

    async def _sqs(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """One SQS call through the retry layer; botocore errors come out typed."""

        async def once() -> dict[str, Any]:
            client = await self._client()
            try:
                result: dict[str, Any] = await getattr(client, operation)(**kwargs)
            except (ClientError, BotoCoreError) as e:
                raise translate_error(e, operation) from e
            return result

        return await call_with_retry(
            once, self.predicate, self.retry, operation=operation, sleep=self._sleep
        )

    async def url(self) -> str:
        """The queue's URL (looked up by name once)."""
        if self._url is None:
            answer = await self._sqs("get_queue_url", {"QueueName": self.queue})
            self._url = str(answer["QueueUrl"])
        return self._url

    async def receive(self) -> list[QueueMessage]:
        """Up to ``max_messages`` messages, waiting up to ``wait_time`` seconds for one."""
        answer = await self._sqs(
            "receive_message",
            {
                "QueueUrl": await self.url(),
                "MaxNumberOfMessages": self.max_messages,
                "WaitTimeSeconds": self.wait_time,
            },
        )
        return [
            QueueMessage(str(m.get("MessageId", "")), m["ReceiptHandle"], m.get("Body", ""))
            for m in answer.get("Messages", [])
        ]

    async def delete(self, message: QueueMessage) -> None:
        """Drop a handled message (SQS answers a receipt handle already deleted with success)."""
        kwargs = {"QueueUrl": await self.url(), "ReceiptHandle": message.receipt_handle}
        await self._sqs("delete_message", kwargs)
