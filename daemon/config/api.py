"""The ``api`` section: the HTTP listener, and the bearer token it needs off loopback."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, field_validator, model_validator
from shoal.daemon.config.common import _STRICT

__all__ = ["ApiConfig"]


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8089")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiConfig(BaseModel):
    model_config = _STRICT

    listen: str = "127.0.0.1:8089"
    """host:port of the HTTP listener (metrics, health, status, demand)."""
    token_file: Path | None = None
    """File holding the bearer token for PUT /v1/demand; required off loopback."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("token_file")
    @classmethod
    def _token(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if not value.is_file():
            raise ValueError("expected an existing, readable token file")
        if not os.access(value, os.R_OK):
            raise ValueError("token file is not readable")
        if not value.read_text().strip():
            raise ValueError("token file is empty")
        return value

    @model_validator(mode="after")
    def _exposed(self) -> ApiConfig:
        if self.token_file is None and not _is_loopback(self.host):
            raise ValueError(
                f"listen {self.listen!r} is not loopback: set api.token_file so "
                "PUT /v1/demand requires a bearer token"
            )
        return self

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    def token(self) -> str | None:
        """The bearer token (never log it)."""
        return self.token_file.read_text().strip() if self.token_file else None
