"""deploy/interruption-queue.yaml: cfn-lint clean, and on moto's CloudFormation it creates a
queue that EventBridge fills with exactly the four kinds of event shoal reads (moto routes
``PutEvents`` through the stack's rules to their SQS target)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiobotocore.session import get_session
from shoal.providers.aws_interruptions import NoticeKind, parse_event

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "interruption-queue.yaml"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
REGION = "us-east-1"

# moto's CloudFormation skips the queue policy with this warning (checked on its own below)
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt) kept as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CFN_LINT), "--", str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_template_is_cfn_lint_clean() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("MessageRetentionPeriod: 300", "Retention: 5"))
    result = cfn_lint(broken)
    assert result.returncode != 0
    assert "Retention" in result.stdout


def test_the_queue_policy_lets_eventbridge_send_and_nothing_in_over_http() -> None:
    resources = template()["Resources"]
    policy = resources["InterruptionQueuePolicy"]["Properties"]["PolicyDocument"]
    (send,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert "events.amazonaws.com" in send["Principal"]["Service"]
    assert send["Action"] == "sqs:SendMessage"
    assert send["Resource"] == "InterruptionQueue.Arn"  # this queue only
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.fixture
async def stack(moto_url: str) -> AsyncIterator[tuple[Any, Any, str]]:
    session = get_session()
    async with (
        session.create_client("cloudformation", region_name=REGION, endpoint_url=moto_url) as cfn,
        session.create_client("sqs", region_name=REGION, endpoint_url=moto_url) as sqs,
        session.create_client("events", region_name=REGION, endpoint_url=moto_url) as events,
    ):
        await cfn.create_stack(
            StackName="shoal-demo",
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": "ClusterName", "ParameterValue": "demo"}],
        )
        (described,) = (await cfn.describe_stacks(StackName="shoal-demo"))["Stacks"]
        assert described["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
        assert outputs["QueueName"] == "shoal-demo-interruptions"
        url = (await sqs.get_queue_url(QueueName=outputs["QueueName"]))["QueueUrl"]
        yield sqs, events, url


async def test_the_stack_routes_the_four_watched_kinds_to_the_queue(
    stack: tuple[Any, Any, str],
) -> None:
    sqs, events, url = stack
    health = {"service": "EC2", "eventTypeCategory": "scheduledChange"}
    retiring = {**health, "affectedEntities": [{"entityValue": "i-4"}]}
    entries = [
        ("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": "i-1"}),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation", {"instance-id": "i-2"}),
        ("aws.ec2", "EC2 Instance State-change Notification", {"instance-id": "i-3", "state": "x"}),
        ("aws.health", "AWS Health Event", retiring),
        # not watched: another service's health event, another EC2 event
        ("aws.health", "AWS Health Event", {**health, "service": "RDS"}),
        ("aws.ec2", "EC2 AMI State Change", {"ImageId": "ami-1"}),
    ]
    answer = await events.put_events(
        Entries=[
            {"Source": source, "DetailType": kind, "Detail": json.dumps(detail)}
            for source, kind, detail in entries
        ]
    )
    assert answer["FailedEntryCount"] == 0
    received = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10))["Messages"]
    notices = [parse_event(m["Body"]) for m in received]
    assert sorted((n.kind, n.instance_ids) for n in notices if n is not None) == [
        (NoticeKind.REBALANCE, ("i-2",)),
        (NoticeKind.SCHEDULED_CHANGE, ("i-4",)),
        (NoticeKind.SPOT_INTERRUPTION, ("i-1",)),
        (NoticeKind.STATE_CHANGE, ("i-3",)),
    ]
    assert len(received) == 4  # the rules let nothing else in
