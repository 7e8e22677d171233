"""The hooks' spool (``daemon.slurm.spool``): a request the daemon could not take waits on disk,
whole or not at all, and the daemon serves each one once, also across a crash between its
accept and its deletion, and also when the daemon took it late and the hook spooled it too."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from shoal.daemon.slurm import spool
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from slurm.test_slurm_power import ZONE, Daemon, start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_the_daemon_makes_a_spool_anyone_may_write_and_only_it_may_list(tmp_path: Path) -> None:
    directory = spool.spool_dir(tmp_path / "state")
    spool.prepare(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o1733
    os.chmod(directory, 0o700)
    spool.prepare(directory)  # a folder made otherwise is put right
    assert stat.S_IMODE(directory.stat().st_mode) == 0o1733


def test_a_spooled_request_is_whole_and_readable_by_another_user(tmp_path: Path) -> None:
    old = os.umask(0o077)  # slurmctld's umask must not hide the file from the daemon
    try:
        path = Path(spool.write(tmp_path, "resume-fail", "cloud[1-2]", {"jobs": []}, "hook-1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert spool.pending(tmp_path) == [path]
    request = spool.read(path)
    assert (request.request_id, request.kind, request.nodes, request.resume_file) == (
        "hook-1",
        "resume-fail",
        "cloud[1-2]",
        {"jobs": []},
    )
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_write_that_fails_midway_leaves_nothing_to_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool.os, "fsync", full)
    with pytest.raises(spool.SpoolError, match="No space left"):
        spool.write(tmp_path, "resume", "cloud1", None, "hook-2")
    assert list(tmp_path.iterdir()) == []


def test_a_hook_killed_before_its_rename_leaves_no_request_and_its_file_is_swept(
    tmp_path: Path,
) -> None:
    temp = tmp_path / ".tmp-hook-3"
    temp.write_text('{"version": 1, "request_id": "hook-3"')  # killed mid-write
    assert spool.pending(tmp_path) == []
    now = temp.stat().st_mtime
    assert spool.sweep(tmp_path, now + 60) == []  # a hook may still be writing it
    assert spool.sweep(tmp_path, now + spool.TEMP_MAX_AGE + 1) == [temp.name]
    assert not temp.exists()


def test_requests_are_served_in_the_order_they_were_spooled(tmp_path: Path) -> None:
    ids = [f"hook-{i}-{'z' if i % 2 else 'a'}" for i in range(5)]
    paths = [Path(spool.write(tmp_path, "suspend", "cloud1", None, i)) for i in ids]
    assert spool.pending(tmp_path) == paths
    assert [spool.read(p).request_id for p in spool.pending(tmp_path)] == ids


def test_a_request_not_signed_with_the_token_is_refused(tmp_path: Path) -> None:
    good = Path(spool.write(tmp_path, "suspend", "cloud1", None, "hook-4", token="secret"))
    assert spool.read(good, token="secret").nodes == "cloud1"
    forged = spool.write(tmp_path, "suspend", "cloud2", None, "hook-5", token="guess")
    unsigned = spool.write(tmp_path, "suspend", "cloud3", None, "hook-6")
    for path in (Path(forged), Path(unsigned)):
        with pytest.raises(spool.SpoolError, match="not signed"):
            spool.read(path, token="secret")
    # a signed request changed afterwards
    good.write_bytes(good.read_bytes().replace(b'"cloud1"', b'"cloud[1-99]"'))
    with pytest.raises(spool.SpoolError, match="not signed"):
        spool.read(good, token="secret")


class Crash(BaseException):
    """The daemon dies here (nothing after this line runs)."""


async def test_a_crash_between_accept_and_delete_serves_the_request_once(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = {"state_dir": str(tmp_path / "state")}
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock)
    first = await start(tmp_path, clock, provider, top=top)
    directory = first.slurm.spool_dir
    assert directory == tmp_path / "state" / "spool"
    spool.write(directory, "resume", "cloud1", None, spool.new_request_id())

    def crash(path: Path) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(spool, "remove", crash)
        with pytest.raises(Crash):
            await first.slurm.serve_spool()
    await first.served()  # its launch went out while the file was being deleted
    assert first.launches() == 1 and len(spool.pending(directory)) == 1
    await first.slurm.close()

    second = await start(tmp_path, clock, provider, top=top)  # the restart
    assert await second.slurm.serve_spool() == 0  # accepted before: only deleted
    assert spool.pending(directory) == []
    await second.served()
    assert second.launches() == 1 and second.power.state.requests == {}
    counted = second.metrics.registry.get_sample_value(
        "shoal_slurm_requests_total", {"kind": "resume"}
    )
    assert counted in (None, 0.0)


async def test_a_request_taken_late_and_spooled_too_is_served_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The daemon took a suspend but answered after the hook gave up, so the hook spooled it
    too; a resume of the node follows. Served again, the suspend would end the new instance."""
    d = await start(tmp_path, clock, top={"state_dir": str(tmp_path / "state")})
    await d.power.accept("resume", "cloud1")
    await d.served()
    late = spool.new_request_id()
    await d.power.accept("suspend", "cloud1", request_id=late)
    assert d.slurm.spool_dir is not None
    spool.write(d.slurm.spool_dir, "suspend", "cloud1", None, late)
    await d.served()
    await d.power.accept("resume", "cloud1", request_id=spool.new_request_id())
    await d.served()
    (instance,) = (await d.workers())["cloud1"]
    assert await d.slurm.serve_spool() == 0
    await d.served()
    assert (await d.workers()) == {"cloud1": [instance]}
    assert spool.pending(d.slurm.spool_dir) == []


async def test_a_running_daemon_serves_the_spool_every_poll_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    import asyncio

    d = await start(tmp_path, clock, top={"state_dir": str(tmp_path / "state")})
    assert d.slurm.spool_dir is not None
    running = asyncio.create_task(d.slurm.run())
    try:
        await clock.advance(1)
        spool.write(d.slurm.spool_dir, "resume", "cloud2", None, spool.new_request_id())
        await clock.advance(d.slurm.settings.poll_interval)
        await d.served()
        assert sorted(await d.workers()) == ["cloud2"]
        assert spool.pending(d.slurm.spool_dir) == []
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await d.slurm.close()


async def test_an_empty_spool_is_not_listed_and_a_request_in_it_is_still_served(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool is empty nearly always: a poll looks at its first entry only, it lists and
    sweeps nothing (the listing cost most of a power-saving chaos seed)."""
    import asyncio

    d = await start(tmp_path, clock, top={"state_dir": str(tmp_path / "state")})
    assert d.slurm.spool_dir is not None
    listings = []
    for name in ("pending", "sweep"):
        real = getattr(spool, name)

        def counted(*args: object, real: object = real, name: str = name) -> object:
            listings.append(name)
            return real(*args)  # type: ignore[operator]

        monkeypatch.setattr(spool, name, counted)
    running = asyncio.create_task(d.slurm.run())
    try:
        await clock.advance(10 * d.slurm.settings.poll_interval)
        assert listings == []
        spool.write(d.slurm.spool_dir, "resume", "cloud2", None, spool.new_request_id())
        await clock.advance(d.slurm.settings.poll_interval)
        await d.served()
        assert sorted(await d.workers()) == ["cloud2"]
        assert spool.pending(d.slurm.spool_dir) == []
        assert "pending" in listings
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await d.slurm.close()


def quarantined(directory: Path) -> list[str]:
    """The spool's files in the quarantine, by their name in the spool."""
    return sorted(p.name.split("-", 1)[1] for p in spool.quarantine_dir(directory).iterdir())


def spooled_name(directory: Path, order: int, request_id: str) -> Path:
    return directory / f"{order:020d}-{request_id}.json"


async def test_files_that_cannot_be_served_are_quarantined_and_never_block_the_rest(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The spool is writable by every local user. A file nested deeply enough to raise
    RecursionError in the JSON parser stopped every scan at it, for good (nothing spooled
    after it was served); a symlink was followed (to /dev/zero: memory exhausted); a file of
    any size was read whole."""
    d = await start(tmp_path, clock, top={"state_dir": str(tmp_path / "state")})
    directory = d.slurm.spool_dir
    assert directory is not None
    spooled_name(directory, 1, "deep").write_text("[" * 200_000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = spool.write(elsewhere, "resume", "cloud3", None, "hook-linked")
    spooled_name(directory, 2, "hook-linked").symlink_to(target)  # valid, but a symlink
    big = spool.write(elsewhere, "resume", "cloud4", {"pad": "x" * spool.MAX_BYTES}, "hook-big")
    os.rename(big, spooled_name(directory, 3, "hook-big"))
    spooled_name(directory, 4, "hook-folder").mkdir()
    spooled_name(directory, 5, "hook-bad-nodes").write_bytes(
        Path(spool.write(elsewhere, "resume", "cloud[", None, "hook-bad-nodes")).read_bytes()
    )
    spool.write(directory, "resume", "cloud1", None, spool.new_request_id())

    assert await d.slurm.serve_spool() == 1
    await d.served()
    assert sorted(await d.workers()) == ["cloud1"]
    assert spool.pending(directory) == []
    assert quarantined(directory) == [
        f"{i:020d}-{name}.json"
        for i, name in enumerate(("deep", "hook-linked", "hook-big", "hook-folder"), 1)
    ] + [f"{5:020d}-hook-bad-nodes.json"]
    counted = quarantine_counts(d, "malformed", "not_a_file", "too_large", "refused")
    assert counted == {"malformed": 1, "not_a_file": 2, "too_large": 1, "refused": 1}
    assert Path(target).exists()  # the link was moved, not what it points at


async def test_a_fifo_in_the_spool_does_not_hang_the_daemon(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A FIFO named like a request blocked the read forever, and with it the spool's scans
    (and, served at start, the daemon)."""
    import threading

    d = await start(tmp_path, clock, top={"state_dir": str(tmp_path / "state")})
    directory = d.slurm.spool_dir
    assert directory is not None
    fifo = spooled_name(directory, 1, "hook-fifo")
    os.mkfifo(fifo)
    spool.write(directory, "resume", "cloud1", None, spool.new_request_id())
    done, hung = threading.Event(), []

    def watchdog() -> None:  # unblocks a hung read, so that the test fails instead of hanging
        if not done.wait(10):
            hung.append(True)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        served = await d.slurm.serve_spool()
    finally:
        done.set()
        guard.join()
    assert not hung, "the scan blocked on the FIFO"
    assert served == 1
    assert quarantined(directory) == [fifo.name]


async def start_with_token(tmp_path: Path, clock: FakeClock, token_file: Path) -> Daemon:
    """A power-saving daemon whose API (and spool) take the token in ``token_file``."""
    top = {"state_dir": str(tmp_path / "state"), "api": {"token_file": str(token_file)}}
    return await start(tmp_path, clock, top=top)


def quarantine_counts(d: Daemon, *reasons: str) -> dict[str, float | None]:
    return {
        reason: d.metrics.registry.get_sample_value(
            "shoal_slurm_spool_quarantined_total", {"reason": reason}
        )
        for reason in reasons
    }


async def test_a_request_signed_with_a_rotated_token_is_served_and_a_forged_one_kept(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The daemon read the token once, the hooks on every call: after a rotation a spooled
    request signed with the new token was refused and deleted (lost); a request that is not
    signed was deleted too (nothing left to look at)."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    d = await start_with_token(tmp_path, clock, token_file)
    directory = d.slurm.spool_dir
    assert directory is not None
    token_file.write_text("second\n")  # rotated while the daemon runs
    rotated = spool.write(directory, "resume", "cloud1", None, "hook-new", token="second")
    forged = spool.write(directory, "resume", "cloud2", None, "hook-forged", token="guess")
    assert await d.slurm.serve_spool() == 1
    await d.served()
    assert sorted(await d.workers()) == ["cloud1"]
    assert spool.pending(directory) == []
    assert quarantined(directory) == [Path(forged).name]
    assert Path(rotated).name not in quarantined(directory)


async def test_a_token_file_emptied_mid_rotation_never_opens_the_spool(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The spool read the token file again on a mismatch, on its own: a file emptied by a
    rotation in progress gave no token at all, and a forged request (and every one after)
    was served. The spool asks the API's ``BearerToken``, which keeps the last token."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    d = await start_with_token(tmp_path, clock, token_file)
    directory = d.slurm.spool_dir
    assert directory is not None
    token_file.write_text("")  # truncated: the new token is not written yet
    forged = spool.write(directory, "resume", "cloud2", None, "hook-forged", token="guess")
    unsigned = spool.write(directory, "resume", "cloud3", None, "hook-unsigned")
    assert await d.slurm.serve_spool() == 0
    await d.served()
    assert await d.workers() == {}
    assert quarantined(directory) == sorted([Path(forged).name, Path(unsigned).name])
    assert quarantine_counts(d, "unsigned") == {"unsigned": 2}


async def test_a_token_rotated_while_the_daemon_was_down_quarantines_the_old_requests_loudly(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The hooks spooled requests signed with the old token while the daemon was down, then
    the token was rotated. They are never served (whoever has the old token may write to the
    spool), and they are told apart from forgeries: reason ``token_rotated`` in the log and
    the metric. A request signed with the new token is served."""
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    directory = spool.spool_dir(tmp_path / "state")
    spool.prepare(directory)
    before = spool.write(directory, "resume", "cloud1", None, "hook-before", token="old")
    token_file.write_text("new\n")
    rotated_ns = int(Path(before).name[:20]) + 1_000_000  # the rotation came after the write
    os.utime(token_file, ns=(rotated_ns, rotated_ns))
    after = spooled_name(directory, rotated_ns + 1, "hook-after")  # spooled after the rotation
    os.rename(spool.write(tmp_path, "resume", "cloud2", None, "hook-after", token="new"), after)
    forged = spooled_name(directory, rotated_ns + 2, "hook-forged")
    os.rename(spool.write(tmp_path, "resume", "cloud3", None, "hook-forged", token="x"), forged)

    d = await start_with_token(tmp_path, clock, token_file)  # the restart, new token
    assert await d.slurm.serve_spool() == 1
    await d.served()
    assert sorted(await d.workers()) == ["cloud2"]
    assert spool.pending(directory) == []
    assert quarantined(directory) == sorted([Path(before).name, forged.name])
    assert quarantine_counts(d, "token_rotated", "unsigned") == {"token_rotated": 1, "unsigned": 1}
    assert f"file={Path(before).name} reason=token_rotated" in caplog.text
    assert "before api.token_file last changed" in caplog.text


def test_the_quarantine_keeps_only_the_latest_files(tmp_path: Path) -> None:
    directory = spool.spool_dir(tmp_path)
    spool.prepare(directory)
    for i in range(5):
        spooled_name(directory, i, f"bad-{i}").write_text("{")
        spool.quarantine(spooled_name(directory, i, f"bad-{i}"), keep=3)
    assert quarantined(directory) == [f"{i:020d}-bad-{i}.json" for i in (2, 3, 4)]
    assert spool.pending(directory) == []
