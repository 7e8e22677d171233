"""A local moto server for AWS provider tests, and the EC2 behaviours moto 5.2 lacks.

Importable outside pytest (the e2e tests start a daemon subprocess pointed at the server via
``provider.endpoint_url``): ``start_moto_server()``, ``reset_moto(url)``, ``FAKE_CREDENTIALS``
and ``Ec2Behaviour`` with ``install()``/``uninstall()``. The server runs in this process's
threads, so patches installed here apply to whatever talks to it.

moto 5.2 differs from EC2 where these tests need EC2 (DESIGN.md, Conventions). When
installed, ``Ec2Behaviour`` patches ``moto.ec2.responses.instances.InstanceResponse.
run_instances`` and ``moto.ec2.models.instances.InstanceBackend.run_instances`` so that,
as EC2 documents for RunInstances:

- up to **MaxCount** instances are launched (moto launches MinCount): as many as capacity and
  the account limit allow, and at least MinCount or none (``InsufficientInstanceCapacity`` /
  ``InstanceLimitExceeded``);
- a repeated **ClientToken** returns the original reservation and launches nothing
  (moto ignores it); scoped per account and region;
- **capacity** per instance type, or per instance type and zone (``capacity[type]`` or
  ``capacity[(type, zone)]``), and an account **instance limit** (``instance_limit``, counting
  pending/running instances) exist (moto has none);
- **placement groups** (moto has none): CreatePlacementGroup (with tags; a name taken is
  ``InvalidPlacementGroup.Duplicate``), DescribePlacementGroups (by ``GroupNames`` or
  ``tag:<key>`` filters), DeletePlacementGroup (``InvalidPlacementGroup.Unknown`` for a name it
  does not know, ``InvalidPlacementGroup.InUse`` while a live instance is in it), and
  RunInstances into one (``Placement.GroupName``; an unknown one is
  ``InvalidPlacementGroup.Unknown``); ``placement_groups`` holds them by name, ``members`` which
  instances were launched into which;
- DescribeInstances is **eventually consistent** (``listing_lag`` seconds: a new instance is
  missing from listings that long, as EC2 documents; moto lists it at once).

It also injects faults: ``fail_next(code, ...)`` makes the next matching RunInstances fail
with that error code before anything launches (throttling, capacity); ``lose_next_response``
lets the next one launch and then answers ``InternalError``, as a response lost on the way back;
``fail_next_terminate(code, message)`` makes the next TerminateInstances fail with an EC2 error
shape (``{ids}`` in the message is replaced by the ids asked for); ``fail_next_create_tags(code)``
makes the next CreateTags fail, tagging nothing; ``hold_security_groups(times)`` makes the
next DeleteSecurityGroup calls answer ``DependencyViolation``, deleting nothing, as EC2 does for
a while after the group's instances terminate (their network interfaces detach later).
``requests`` records every RunInstances call's parameters as the server received them,
``terminations`` every TerminateInstances call's ids.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instances import InstanceBackend, Reservation
from moto.ec2.responses import EC2Response
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.security_groups import SecurityGroups
from moto.ec2.responses.tags import TagResponse
from moto.server import ThreadedMotoServer

__all__ = [
    "FAKE_CREDENTIALS",
    "Ec2Behaviour",
    "aws_env",
    "ec2_behaviour",
    "moto_server",
    "moto_url",
    "reset_moto",
    "start_moto_server",
]

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_LIVE = ("pending", "running")


def start_moto_server() -> tuple[ThreadedMotoServer, str]:
    """Start a moto server on 127.0.0.1 and a free port; returns it and its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def reset_moto(url: str) -> None:
    """Forget every resource the server holds."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclasses.dataclass
class _Fault:
    code: str
    message: str
    instance_type: str | None
    times: int
    after_launch: bool


@dataclasses.dataclass
class Ec2Behaviour:
    """EC2's RunInstances behaviour and fault injection for moto (see the module docstring)."""

    launch_max_count: bool = True
    honour_client_token: bool = True
    capacity: dict[str | tuple[str, str], int] = dataclasses.field(default_factory=dict)
    instance_limit: int | None = None
    listing_lag: float = 0.0
    now: Callable[[], float] = time.monotonic  # the listing lag's clock (a test may fake it)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    terminations: list[list[str]] = dataclasses.field(default_factory=list)
    placement_groups: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    members: dict[str, str] = dataclasses.field(default_factory=dict)  # instance id -> group
    _faults: list[_Fault] = dataclasses.field(default_factory=list)
    _terminate_faults: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    _tag_faults: list[str] = dataclasses.field(default_factory=list)
    _group_holds: int = 0
    _launched_at: dict[str, float] = dataclasses.field(default_factory=dict)
    _tokens: dict[tuple[str, str, str], Any] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _undo: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def fail_next(
        self,
        code: str,
        message: str = "injected fault",
        *,
        instance_type: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` RunInstances (of ``instance_type``, or any) fail with ``code``."""
        self._faults.append(_Fault(code, message, instance_type, times, after_launch=False))

    def lose_next_response(self, *, times: int = 1) -> None:
        """The next RunInstances launches, then answers ``InternalError`` (response lost)."""
        self._faults.append(_Fault("InternalError", "response lost", None, times, True))

    def fail_next_terminate(self, code: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` TerminateInstances fail with ``code`` and ``message`` (``{ids}``
        is replaced by the ids asked for), terminating nothing."""
        self._terminate_faults.extend([(code, message)] * times)

    def fail_next_create_tags(self, code: str, *, times: int = 1) -> None:
        """The next ``times`` CreateTags fail with ``code``, tagging nothing."""
        self._tag_faults.extend([code] * times)

    def hold_security_groups(self, times: int) -> None:
        """The next ``times`` DeleteSecurityGroup answer ``DependencyViolation`` (EC2's code and
        message), deleting nothing: the detached instances' network interfaces still hold it."""
        self._group_holds += times

    def _visible(self, instance_id: str) -> bool:
        launched = self._launched_at.get(instance_id)
        return launched is None or self.now() - launched >= self.listing_lag

    def _take_fault(self, instance_type: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.instance_type in (None, instance_type):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- patching ------------------------------------------------------------------------

    def install(self) -> None:
        """Patch moto's RunInstances (response and backend) to behave as EC2 documents."""
        if self._undo:
            return
        behaviour = self
        original_response = InstanceResponse.run_instances
        original_backend = InstanceBackend.run_instances
        original_describe = InstanceBackend.describe_instances
        original_terminate = InstanceResponse.terminate_instances
        original_create_tags = TagResponse.create_tags
        original_delete_group = SecurityGroups.delete_security_group
        count_override = threading.local()

        def describe_instances(backend: Any, filters: Any = None) -> list[Reservation]:
            """What DescribeInstances lists: instances launched less than listing_lag ago
            are left out (moto copies each reservation, so the copy can be trimmed)."""
            listed = []
            for reservation in original_describe(backend, filters):
                reservation.instances = [
                    i for i in reservation.instances if behaviour._visible(i.id)
                ]
                if reservation.instances:
                    listed.append(reservation)
            return listed

        def terminate_instances(response: InstanceResponse) -> ActionResult:
            ids = list(response._get_param("InstanceIds", []))
            behaviour.terminations.append(ids)
            with behaviour._lock:
                fault = behaviour._terminate_faults.pop(0) if behaviour._terminate_faults else None
            if fault is not None:
                code, message = fault
                raise EC2ClientError(code, message.replace("{ids}", ", ".join(ids)))
            return original_terminate(response)

        def create_tags(response: TagResponse) -> ActionResult:
            with behaviour._lock:
                code = behaviour._tag_faults.pop(0) if behaviour._tag_faults else None
            if code is not None:
                raise EC2ClientError(code, "injected fault")
            return original_create_tags(response)

        def delete_security_group(response: SecurityGroups) -> ActionResult:
            with behaviour._lock:
                held = behaviour._group_holds > 0
                behaviour._group_holds -= held
            if held:
                group = response._get_param("GroupId") or response._get_param("GroupName")
                raise EC2ClientError(
                    "DependencyViolation", f"resource {group} has a dependent object"
                )
            return original_delete_group(response)

        def backend_run_instances(
            backend: Any, image_id: str, count: int, *args: Any, **kwargs: Any
        ) -> Any:
            override = getattr(count_override, "count", None)
            return original_backend(
                backend, image_id, count if override is None else override, *args, **kwargs
            )

        def response_run_instances(response: InstanceResponse) -> ActionResult:
            return behaviour._run_instances(response, original_response, count_override)

        InstanceBackend.run_instances = backend_run_instances  # type: ignore[method-assign]
        InstanceResponse.run_instances = response_run_instances  # type: ignore[method-assign]
        InstanceBackend.describe_instances = describe_instances  # type: ignore[method-assign]
        InstanceResponse.terminate_instances = terminate_instances  # type: ignore[method-assign]
        TagResponse.create_tags = create_tags  # type: ignore[method-assign]
        SecurityGroups.delete_security_group = delete_security_group  # type: ignore[method-assign]
        groups = {
            "create_placement_group": self._create_placement_group,
            "describe_placement_groups": self._describe_placement_groups,
            "delete_placement_group": self._delete_placement_group,
        }
        for name, handler in groups.items():
            setattr(EC2Response, name, lambda response, handler=handler: handler(response))

        def undo() -> None:
            for name in groups:
                delattr(EC2Response, name)
            InstanceBackend.run_instances = original_backend  # type: ignore[method-assign]
            InstanceResponse.run_instances = original_response  # type: ignore[method-assign]
            InstanceBackend.describe_instances = original_describe  # type: ignore[method-assign]
            InstanceResponse.terminate_instances = original_terminate  # type: ignore[method-assign]
            TagResponse.create_tags = original_create_tags  # type: ignore[method-assign]
            SecurityGroups.delete_security_group = original_delete_group  # type: ignore[method-assign]

        self._undo.append(undo)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _create_placement_group(self, response: EC2Response) -> ActionResult:
        name = response._get_param("GroupName")
        tags = [t for spec in response._get_param("TagSpecifications", []) for t in spec["Tags"]]
        with self._lock:
            if name in self.placement_groups:
                raise EC2ClientError(
                    "InvalidPlacementGroup.Duplicate",
                    f"The Placement Group '{name}' already exists.",
                )
            group = {
                "GroupName": name,
                "GroupId": f"pg-{len(self.placement_groups) + 1:017x}",
                "Strategy": response._get_param("Strategy"),
                "State": "available",
                "Tags": tags,
            }
            self.placement_groups[name] = group
        return ActionResult({"PlacementGroup": group})

    def _describe_placement_groups(self, response: EC2Response) -> ActionResult:
        names = response._get_param("GroupNames", [])
        unknown = [n for n in names if n not in self.placement_groups]
        if unknown:
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown", f"The Placement Group '{unknown[0]}' is unknown."
            )
        found = [g for g in self.placement_groups.values() if not names or g["GroupName"] in names]
        for f in response._get_param("Filters", []):
            assert f["Name"].startswith("tag:"), f"filter {f['Name']} not faked"
            key = f["Name"].removeprefix("tag:")
            found = [
                g
                for g in found
                if any(t["Key"] == key and t["Value"] in f["Values"] for t in g["Tags"])
            ]
        return ActionResult({"PlacementGroups": found})

    def _delete_placement_group(self, response: EC2Response) -> ActionResult:
        name = response._get_param("GroupName")
        live = {
            instance.id
            for reservation in response.ec2_backend.reservations.values()
            for instance in reservation.instances
            if instance.state in _LIVE
        }
        with self._lock:
            if name not in self.placement_groups:
                raise EC2ClientError(
                    "InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown."
                )
            if any(g == name and i in live for i, g in self.members.items()):
                raise EC2ClientError(
                    "InvalidPlacementGroup.InUse", f"The Placement Group '{name}' is in use."
                )
            del self.placement_groups[name]
        return ActionResult({})

    def _run_instances(
        self,
        response: InstanceResponse,
        original: Callable[[InstanceResponse], ActionResult],
        count_override: threading.local,
    ) -> ActionResult:
        instance_type = response._get_param("InstanceType", "m1.small")
        zone = response._get_param("Placement", {}).get("AvailabilityZone") or ""
        min_count = int(response._get_param("MinCount", if_none="1"))
        max_count = int(response._get_param("MaxCount", if_none=str(min_count)))
        token = response._get_param("ClientToken") or ""
        group = response._get_param("Placement", {}).get("GroupName", "")
        self.requests.append(
            {
                "InstanceType": instance_type,
                "MinCount": min_count,
                "MaxCount": max_count,
                "ClientToken": token,
                "Zone": zone,
                "InstanceMarketOptions": response._get_param("InstanceMarketOptions", {}),
                "PlacementGroup": group,
            }
        )
        if group and group not in self.placement_groups:
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown", f"The Placement Group '{group}' is unknown."
            )
        fault = self._take_fault(instance_type)
        if fault is not None and not fault.after_launch:
            raise EC2ClientError(fault.code, fault.message)
        key = (response.current_account, response.region, token)
        with self._lock:
            if self.honour_client_token and token and key in self._tokens:
                return ActionResult(self._tokens[key])  # EC2: same token, same reservation
            count = max_count if self.launch_max_count else min_count
            pool = (
                (instance_type, zone) if (instance_type, zone) in self.capacity else instance_type
            )
            if pool in self.capacity:
                if self.capacity[pool] < min_count:
                    raise EC2ClientError(
                        "InsufficientInstanceCapacity",
                        f"We currently do not have sufficient {instance_type} capacity in the "
                        f"Availability Zone you requested ({zone}).",
                    )
                count = min(count, self.capacity[pool])
            if self.instance_limit is not None:
                live = sum(
                    1
                    for reservation in response.ec2_backend.reservations.values()
                    for instance in reservation.instances
                    if instance.state in _LIVE
                )
                if live + min_count > self.instance_limit:
                    raise EC2ClientError(
                        "InstanceLimitExceeded",
                        f"You have requested more instances than your limit of "
                        f"{self.instance_limit} allows.",
                    )
                count = min(count, self.instance_limit - live)
            count_override.count = count
            try:
                result = original(response)
            finally:
                count_override.count = None
            reservation = result.result
            if pool in self.capacity:
                self.capacity[pool] -= len(reservation.instances)  # type: ignore[attr-defined]
            now = self.now()
            for instance in reservation.instances:  # type: ignore[attr-defined]
                self._launched_at[instance.id] = now
                if group:
                    self.members[instance.id] = group
            if token:
                self._tokens[key] = reservation
        if fault is not None:  # after_launch: the instances exist, the answer is lost
            raise EC2ClientError(fault.code, fault.message)
        return result


# -- pytest fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server on 127.0.0.1 for the session; yields its URL."""
    server, url = start_moto_server()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region in the environment; nothing read from ~/.aws."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto_url(moto_server: str, aws_env: None) -> Iterator[str]:
    """The server's URL, reset before and after each test."""
    reset_moto(moto_server)
    yield moto_server
    reset_moto(moto_server)


@pytest.fixture
def ec2_behaviour() -> Iterator[Ec2Behaviour]:
    """EC2 RunInstances behaviour patched into moto for one test (see ``Ec2Behaviour``)."""
    behaviour = Ec2Behaviour()
    behaviour.install()
    try:
        yield behaviour
    finally:
        behaviour.uninstall()
