"""Every AWS action shoal's own clients make, recorded through botocore's event hooks.

``ActionRecorder.installed()`` registers a ``before-parameter-build.*.*`` handler on every
aiobotocore session that creates a client while it is installed (the event a call emits
before its parameters are serialised, with the operation's model and the caller's arguments).
Only clients whose user agent carries ``shoal`` (``AWSProvisioner._client`` sets it) are
recorded, so a test's own inspection calls do not count. Each call is kept as its IAM action
(``ec2:RunInstances``: the service's signing name and the operation's API name) with its
arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import AioSession

__all__ = ["ActionRecorder", "Call"]


@dataclass(frozen=True)
class Call:
    action: str  # "ec2:RunInstances"
    params: Mapping[str, Any]


@dataclass
class ActionRecorder:
    marker: str = "shoal"
    calls: list[Call] = field(default_factory=list)

    @property
    def actions(self) -> set[str]:
        return {call.action for call in self.calls}

    def of(self, action: str) -> list[Mapping[str, Any]]:
        return [call.params for call in self.calls if call.action == action]

    def _record(self, model: Any, params: Mapping[str, Any], context: Any, **_: Any) -> None:
        config = (context or {}).get("client_config")
        if self.marker not in (getattr(config, "user_agent_extra", None) or ""):
            return
        service = model.service_model
        prefix = service.signing_name or service.endpoint_prefix
        self.calls.append(Call(f"{prefix}:{model.name}", dict(params)))

    @contextlib.contextmanager
    def installed(self) -> Iterator[ActionRecorder]:
        original = AioSession.create_client
        recorder = self

        def create_client(session: AioSession, *args: Any, **kwargs: Any) -> Any:
            session.register(
                "before-parameter-build", recorder._record, unique_id=f"shoal-iam-{id(recorder)}"
            )
            return original(session, *args, **kwargs)

        AioSession.create_client = create_client  # type: ignore[method-assign]
        try:
            yield self
        finally:
            AioSession.create_client = original  # type: ignore[method-assign]
