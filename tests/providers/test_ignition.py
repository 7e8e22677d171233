"""InstanceConfiguration.toIgnitionConfig against the Ignition spec 2.2.0.

No validator or JSON schema of Ignition 2.2 is published on PyPI, so ``check_ignition_2_2``
encodes the rules of the spec (Flatcar's ``doc/configuration-v2_2.md``) for every object
we emit: which keys exist, which are required, and their types. It is stricter than
Ignition in one way: an unknown key is an error here (Ignition only warns and ignores it,
which would silently drop our setting).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from shoal.providers.instance_setup import UNIT_SUFFIXES, InstanceConfiguration

# Keys of each object in the 2.2 spec (only the objects we emit are checked in depth).
TOP_KEYS = {"ignition", "storage", "systemd", "networkd", "passwd"}
IGNITION_KEYS = {"version", "config", "timeouts", "security"}
STORAGE_KEYS = {"disks", "raid", "filesystems", "files", "directories", "links"}
FILE_KEYS = {"filesystem", "path", "contents", "mode", "user", "group", "append", "overwrite"}
FILE_CONTENTS_KEYS = {"compression", "source", "verification"}
SYSTEMD_KEYS = {"units"}
UNIT_KEYS = {"name", "enabled", "mask", "contents", "dropins"}
PASSWD_KEYS = {"users", "groups"}
USER_KEYS = {
    "name",
    "passwordHash",
    "sshAuthorizedKeys",
    "uid",
    "gecos",
    "homeDir",
    "noCreateHome",
    "primaryGroup",
    "groups",
    "noUserGroup",
    "noLogInit",
    "shell",
    "system",
    "create",
}
DATA_URL = re.compile(r"^data:(?P<mediatype>[^,;]*(?:;[^,;=]+=[^,;]+)*)(?P<base64>;base64)?,")


def decode_data_url(url: str) -> bytes:
    """Decode an RFC 2397 ``data:`` URL to its bytes."""
    match = DATA_URL.match(url)
    assert match, f"not an RFC 2397 data URL: {url[:60]!r}"
    payload = url[match.end() :]
    assert "#" not in payload, "an unescaped '#' would start a URL fragment"
    raw = unquote_to_bytes(payload)
    if match.group("base64"):
        import base64

        return base64.b64decode(raw, validate=True)
    return raw


def _keys(obj: Any, allowed: set[str], where: str, errors: list[str]) -> bool:
    if not isinstance(obj, dict):
        errors.append(f"{where} must be an object")
        return False
    for key in set(obj) - allowed:
        errors.append(f"{where}.{key} is not a key of the 2.2 spec")
    return True


def check_ignition_2_2(text: str) -> list[str]:
    """The spec violations in an Ignition config (empty if it is a valid 2.2.0 config)."""
    errors: list[str] = []
    doc = json.loads(text)
    if not _keys(doc, TOP_KEYS, "config", errors):
        return errors
    ignition = doc.get("ignition")
    if ignition is None:
        errors.append("ignition is required")
    elif _keys(ignition, IGNITION_KEYS, "ignition", errors) and ignition.get("version") != "2.2.0":
        errors.append(
            f"ignition.version must be the string '2.2.0', not {ignition.get('version')!r}"
        )
    storage = doc.get("storage", {})
    if _keys(storage, STORAGE_KEYS, "storage", errors):
        files = storage.get("files", [])
        if not isinstance(files, list):
            errors.append("storage.files must be a list")
            files = []
        for i, entry in enumerate(files):
            where = f"storage.files[{i}]"
            if not _keys(entry, FILE_KEYS, where, errors):
                continue
            if not isinstance(entry.get("filesystem"), str) or not entry["filesystem"]:
                errors.append(f"{where}.filesystem is required and must be a string")
            path = entry.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                errors.append(f"{where}.path is required and must be an absolute path")
            if "mode" in entry and (
                type(entry["mode"]) is not int or not 0 <= entry["mode"] <= 0o7777
            ):
                errors.append(f"{where}.mode must be an integer (decimal of the octal mode)")
            if "append" in entry and type(entry["append"]) is not bool:
                errors.append(f"{where}.append must be a boolean")
            contents = entry.get("contents")
            if contents is not None and _keys(
                contents, FILE_CONTENTS_KEYS, f"{where}.contents", errors
            ):
                source = contents.get("source")
                if not isinstance(source, str):
                    errors.append(f"{where}.contents.source must be a string URL")
                elif source.startswith("data:"):
                    try:
                        decode_data_url(source)
                    except (AssertionError, ValueError) as e:
                        errors.append(f"{where}.contents.source: {e}")
                elif not re.match(r"^(https?|s3|tftp|oem)://", source):
                    errors.append(f"{where}.contents.source has an unsupported URL scheme")
    systemd = doc.get("systemd", {})
    if _keys(systemd, SYSTEMD_KEYS, "systemd", errors):
        for i, unit in enumerate(systemd.get("units", [])):
            where = f"systemd.units[{i}]"
            if not _keys(unit, UNIT_KEYS, where, errors):
                continue
            name = unit.get("name")
            if not isinstance(name, str) or not name.endswith(UNIT_SUFFIXES) or "/" in name:
                errors.append(f"{where}.name is required: a unit file name with a unit suffix")
            for flag in ("enabled", "mask"):
                if flag in unit and type(unit[flag]) is not bool:
                    errors.append(f"{where}.{flag} must be a boolean")
            if "contents" in unit and not isinstance(unit["contents"], str):
                errors.append(f"{where}.contents must be a string")
    if "passwd" in doc and _keys(doc["passwd"], PASSWD_KEYS, "passwd", errors):
        for i, user in enumerate(doc["passwd"].get("users", [])):
            where = f"passwd.users[{i}]"
            if not _keys(user, USER_KEYS, where, errors):
                continue
            if not isinstance(user.get("name"), str) or not user["name"]:
                errors.append(f"{where}.name is required and must be a string")
            keys = user.get("sshAuthorizedKeys", [])
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                errors.append(f"{where}.sshAuthorizedKeys must be a list of strings")
    return errors


def test_checker_finds_violations() -> None:
    """The checker is not vacuous: each broken rule is reported."""
    bad = {
        "ignition": {"version": "3.0.0"},
        "storage": {
            "files": [
                {"path": "relative", "mode": "0644", "contents": {"source": "data:,a#b"}},
                {"filesystem": "root", "path": "/x", "append": "yes", "colour": 1},
            ]
        },
        "systemd": {"units": [{"name": "nosuffix", "enabled": "true"}]},
        "passwd": {"users": [{"sshAuthorizedKeys": "ssh-rsa AAAA"}]},
    }
    errors = "\n".join(check_ignition_2_2(json.dumps(bad)))
    for fragment in (
        "ignition.version",
        "files[0].filesystem",
        "files[0].path",
        "files[0].mode",
        "files[0].contents.source",
        "files[1].append",
        "files[1].colour",
        "units[0].name",
        "units[0].enabled",
        "users[0].name",
        "users[0].sshAuthorizedKeys",
    ):
        assert fragment in errors, fragment
    assert check_ignition_2_2(json.dumps({})) == ["ignition is required"]


def test_empty_config_is_valid_2_2_without_passwd() -> None:
    text = InstanceConfiguration().toIgnitionConfig()
    assert check_ignition_2_2(text) == []
    doc = json.loads(text)
    assert doc == {
        "ignition": {"version": "2.2.0"},
        "storage": {"files": []},
        "systemd": {"units": []},
    }


def test_full_config_is_valid_2_2() -> None:
    config = InstanceConfiguration()
    config.addFile("/etc/motd", mode="0644", contents="hello\n")
    config.addFile("/var/log/extra", filesystem="oem", mode=0o600, contents="x", append=True)
    config.addUnit("a.service", contents="[Service]\nExecStart=/usr/bin/true\n")
    config.addUnit("b.timer", enabled=False)
    config.addSSHRSAKey("AAAAB3NzaC1yc2EAAAADAQABAAABAQC1")
    config.addSSHRSAKey("AAAAB3NzaC1yc2EAAAADAQABAAABAQC2")
    text = config.toIgnitionConfig()
    assert check_ignition_2_2(text) == []
    doc = json.loads(text)
    assert doc["ignition"]["version"] == "2.2.0"
    assert doc["passwd"] == {
        "users": [
            {
                "name": "core",
                "sshAuthorizedKeys": [
                    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC1",
                    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC2",
                ],
            }
        ]
    }
    first, second = doc["storage"]["files"]
    assert (first["filesystem"], first["path"], first["append"]) == ("root", "/etc/motd", False)
    assert (second["filesystem"], second["append"]) == ("oem", True)
    assert doc["systemd"]["units"] == [
        {"name": "a.service", "enabled": True, "contents": "[Service]\nExecStart=/usr/bin/true\n"},
        {"name": "b.timer", "enabled": False, "contents": ""},
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("0755", 493), ("0644", 420), (0o600, 384), ("644", 420), (0, 0), ("7777", 0o7777)],
)
def test_mode_is_an_integer(mode: str | int, expected: int) -> None:
    config = InstanceConfiguration()
    config.addFile("/f", mode=mode)
    (entry,) = json.loads(config.toIgnitionConfig())["storage"]["files"]
    assert type(entry["mode"]) is int
    assert entry["mode"] == expected


def test_default_mode_is_0755() -> None:
    config = InstanceConfiguration()
    config.addFile("/f")
    assert json.loads(config.toIgnitionConfig())["storage"]["files"][0]["mode"] == 0o755


TRICKY = [
    "",
    "plain",
    "line one\nline two\r\n\ttabbed\n",
    "100% sure, #1 choice; a=b&c?d/e\\f 'q' \"qq\"",
    "unicode: ünïcödé — ☃ 𝄞 中文",
    "%20 is not a space and %zz is not an escape",
    "".join(chr(i) for i in range(128)),
    b"\x00\x01\xfe\xff binary \x80\x81",
]


@pytest.mark.parametrize("contents", TRICKY, ids=range(len(TRICKY)))
def test_contents_round_trip_through_data_url(contents: str | bytes) -> None:
    config = InstanceConfiguration()
    config.addFile("/f", contents=contents)  # type: ignore[arg-type]
    text = config.toIgnitionConfig()
    assert check_ignition_2_2(text) == []
    source = json.loads(text)["storage"]["files"][0]["contents"]["source"]
    assert source.startswith("data:")
    expected = contents.encode("utf-8") if isinstance(contents, str) else contents
    assert decode_data_url(source) == expected


def test_append_flag() -> None:
    config = InstanceConfiguration()
    config.addFile("/etc/a", contents="x", append=True)
    config.addFile("/etc/b", contents="y")
    a, b = json.loads(config.toIgnitionConfig())["storage"]["files"]
    assert a["append"] is True
    assert b["append"] is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "etc/relative"}, "absolute"),
        ({"path": ""}, "absolute"),
        ({"path": "/f", "mode": "0999"}, "octal"),
        ({"path": "/f", "mode": "rw-r--r--"}, "octal"),
        ({"path": "/f", "mode": 0o10000}, "0..0o7777"),
        ({"path": "/f", "mode": -1}, "0..0o7777"),
        ({"path": "/f", "mode": "17777"}, "0..0o7777"),
        ({"path": "/f", "mode": 1.5}, "octal string or an integer"),
        ({"path": "/f", "filesystem": ""}, "filesystem"),
    ],
)
def test_addFile_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        InstanceConfiguration().addFile(**kwargs)


@pytest.mark.parametrize("suffix", UNIT_SUFFIXES)
def test_every_unit_suffix_is_accepted(suffix: str) -> None:
    config = InstanceConfiguration()
    config.addUnit("x" + suffix)
    assert check_ignition_2_2(config.toIgnitionConfig()) == []


@pytest.mark.parametrize("name", ["toil-leader", "toil.conf", ".service", "a/b.service", ""])
def test_addUnit_rejects_names_without_a_unit_suffix(name: str) -> None:
    with pytest.raises(ValueError, match="unit name"):
        InstanceConfiguration().addUnit(name)


@pytest.mark.parametrize("key", ["", "  ", "ssh-rsa AAAAB3Nza", "AAAAB3Nza user@host"])
def test_addSSHRSAKey_wants_the_bare_key(key: str) -> None:
    with pytest.raises(ValueError, match="bare base64 key"):
        InstanceConfiguration().addSSHRSAKey(key)
