"""The ``api`` section: the HTTP listener, and the bearer token it needs off loopback."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, field_validator, model_validator
from shoal.daemon.config.common import _STRICT, _FieldError

__all__ = ["ApiConfig", "InsecureListenError", "check_listen", "is_loopback", "split_listen"]


def split_listen(value: str) -> tuple[str, int]:
    """(host, port) of a ``host:port`` listen address (IPv6 hosts in brackets)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8089")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InsecureListenError(ValueError):
    """Listening beyond loopback without a bearer token."""


def check_listen(host: str, token: str | Path | None) -> None:
    """The one listener rule: beyond loopback only with a bearer token (``token``: the token,
    or the file holding it; empty or None: no token). The config checks it with the token
    file, the daemon again with the token it read."""
    if not token and not is_loopback(host):
        raise InsecureListenError(
            f"refusing to listen on {host!r} without a bearer token: set api.token_file "
            "or listen on 127.0.0.1"
        )


class ApiConfig(BaseModel):
    """The HTTP listener: metrics, health, status and PUT /v1/demand."""

    model_config = _STRICT

    listen: str = "127.0.0.1:8089"
    """host:port of the HTTP listener (metrics, health, status, demand)."""
    token_file: Path | None = None
    """File holding the bearer token for PUT /v1/demand; required off loopback."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _exposed(self) -> ApiConfig:
        try:
            check_listen(self.host, self.token_file)
        except InsecureListenError as exc:
            raise _FieldError(("listen", "token_file"), str(exc)) from None
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]
