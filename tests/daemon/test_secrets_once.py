"""``shoal run`` reads each worker secret file once: its preflight reads and checks the file,
and the provider's ``prepare_workers`` joins workers with that value (``WorkerSecrets``), not
with a second read that could differ from what was checked."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import configs
import pytest
import yaml
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


async def test_sighup_warns_that_changed_workers_or_secret_files_need_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers are prepared once, at start: a reload that changes the ``workers`` section or
    a secret file's contents applies neither, so it says so (``reload_needs_restart``) and
    never quotes the secret. Before, the reload logged ``reloaded`` and the workers kept
    joining with the old token (an expired kubeadm token, silently)."""
    caplog.set_level(logging.INFO, logger="shoal")
    path, token_file = write_config(tmp_path)
    config = load_config(path)
    issues, secrets = check(config)
    assert issues == []
    provider = service.build_provider(config, service.SystemClock())
    daemon = service.Service(
        config, path, provider=provider, install_signals=False, secrets=secrets
    )
    task = asyncio.create_task(daemon.serve())
    try:
        await asyncio.wait_for(daemon.started.wait(), 10)
        assert await daemon.reload()  # nothing changed: nothing to restart for
        assert "event=reload_needs_restart" not in caplog.text

        token_file.write_text(OTHER + "\n")
        assert await daemon.reload()
        (line,) = [r.message for r in caplog.records if "reload_needs_restart" in r.message]
        assert "workers.secrets" in line and OTHER not in caplog.text
        assert provider.bootstrap.kubernetes_join_vars["JOIN_TOKEN"] == TOKEN  # as it says

        caplog.clear()
        token_file.write_text(TOKEN + "\n")
        data = yaml.safe_load(path.read_text())
        data["workers"]["leader"]["address"] = "10.0.0.8"
        path.write_text(yaml.safe_dump(data))
        assert await daemon.reload()
        (line,) = [r.message for r in caplog.records if "reload_needs_restart" in r.message]
        assert line.endswith("sections=workers")

        # reloaded again unchanged: the running workers are still the old ones, so it says
        # so again (it once took the new section as in force and fell silent)
        caplog.clear()
        assert await daemon.reload()
        (line,) = [r.message for r in caplog.records if "reload_needs_restart" in r.message]
        assert line.endswith("sections=workers")
        assert daemon.config.workers.leader.address != "10.0.0.8"  # what is in force
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
