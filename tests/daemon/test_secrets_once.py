"""``shoal run`` reads each worker secret file once: its preflight reads and checks the file,
and the provider's ``prepare_workers`` joins workers with that value (``WorkerSecrets``), not
with a second read that could differ from what was checked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import configs
import pytest
from shoal.daemon import service
from shoal.daemon.cli import main
from shoal.daemon.config import load_config
from shoal.daemon.config.preflight import check
from shoal.providers.workers import WorkerSecrets
from slurm.shoal_proc import free_port

TOKEN = "abcdef.0123456789abcdef"
OTHER = "zzzzzz.9999999999999999"
CA_HASH = "sha256:" + "ab" * 32


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    token_file = tmp_path / "kubeadm-token"
    token_file.write_text(TOKEN + "\n")
    data = configs.config(
        provider={"cluster_type": "kubernetes"},
        workers={
            "leader": {"address": "10.0.0.7"},
            "kubernetes": {"token_file": str(token_file), "ca_cert_hash": CA_HASH},
        },
        api={"listen": f"127.0.0.1:{free_port()}"},
    )
    return configs.write(tmp_path / "shoal.yaml", data), token_file


def test_the_preflight_returns_the_secrets_it_read_and_never_shows_them(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path)
    issues, secrets = check(load_config(path))
    assert issues == []
    assert secrets == WorkerSecrets(kubeadm_token=TOKEN)
    assert TOKEN not in repr(secrets)


def test_shoal_run_joins_workers_with_the_token_its_preflight_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token file is rewritten between the preflight and the start: the provider read it
    again and joined workers with a token nobody had checked."""
    path, token_file = write_config(tmp_path)
    joined: dict[str, str] = {}

    def run(config: Any, config_path: Any, secrets: Any = None) -> int:  # after the preflight
        token_file.write_text(OTHER + "\n")  # a second read would give another token

        async def serve() -> int:
            provider = service.build_provider(config, service.SystemClock())
            daemon = service.Service(
                config, config_path, provider=provider, install_signals=False, secrets=secrets
            )
            task = asyncio.create_task(daemon.serve())
            await asyncio.wait_for(daemon.started.wait(), 10)
            joined.update(provider.bootstrap.kubernetes_join_vars or {})
            daemon.stop()
            return await asyncio.wait_for(task, 10)

        return asyncio.run(serve())

    monkeypatch.setattr(service, "run", run)
    assert main(["run", "-c", str(path)]) == 0
    assert joined["JOIN_TOKEN"] == TOKEN
