"""Fixtures every test directory may use: a local moto server with EC2's documented behaviour
(tests/moto_fixtures.py), and one botocore data loader for the whole run.

botocore gives every session its own loader, and every AWSProvisioner (and every test's
client) opens a session: each parsed EC2's 3 MB service model again, about a second of CPU
per provisioner, most of a moto test's set-up. The loader caches what it parses and botocore
treats what it returns as read-only (two clients of one session already share it), so one
loader serves every session of the test process."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import botocore.loaders
import botocore.session
import pytest
from moto_fixtures import aws_env, ec2_behaviour, moto_server, moto_url

__all__ = ["aws_env", "ec2_behaviour", "moto_server", "moto_url"]


@functools.cache
def _loader(data_path: str | None) -> botocore.loaders.Loader:
    return botocore.loaders.create_loader(data_path)


@pytest.fixture(scope="session", autouse=True)
def one_botocore_loader() -> Iterator[None]:
    """Every botocore (and aiobotocore) session of this process gets the one loader."""
    session = botocore.session.Session
    original = session._register_data_loader

    def register(self: botocore.session.Session) -> None:
        self._components.lazy_register_component(
            "data_loader", lambda: _loader(self.get_config_variable("data_path"))
        )

    session._register_data_loader = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        session._register_data_loader = original  # type: ignore[method-assign]
