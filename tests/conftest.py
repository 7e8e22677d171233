"""Fixtures every test directory may use: a local moto server with EC2's documented behaviour
(tests/moto_fixtures.py)."""

from moto_fixtures import aws_env, ec2_behaviour, moto_server, moto_url

__all__ = ["aws_env", "ec2_behaviour", "moto_server", "moto_url"]
