"""docs/demand-api.md is the push API's contract: its examples run, as written, against a real
listener, and answer what the page shows; `shoal demand-schema` is the schema the API
validates with; every config key is in config.example.yaml."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from shoal.daemon.cli import main
from shoal.daemon.config import ShoalConfig
from shoal.daemon.demand import DemandError, DemandReports, parse_demand
from shoal.daemon.http import make_app, start_http

if TYPE_CHECKING:
    from loop_harness import Harness

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "demand-api.md"
EXAMPLE = ROOT / "config.example.yaml"
DOC_URL = "http://127.0.0.1:8089"
DOC_TOKEN_FILE = "/etc/shoal/api-token"
TOKEN = "doc-token-0123"


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a markdown page: (language, content)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def examples() -> list[tuple[str, str]]:
    """(sh command, the answer shown after it) for every curl example."""
    found = blocks(DOC.read_text())
    return [
        (body, found[i + 1][1])
        for i, (lang, body) in enumerate(found)
        if lang == "sh" and "curl" in body and found[i + 1][0] == "text"
    ]


def schema(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["demand-schema"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_page_has_its_examples_and_the_readme_links_it() -> None:
    assert len(examples()) == 4
    assert "docs/demand-api.md" in (ROOT / "README.md").read_text()


async def test_every_curl_example_answers_as_shown(harness: Harness, tmp_path: Path) -> None:
    """The commands run with bash and the real curl against make_app on a free port, as the
    daemon serves it with a token and `demand.reports: [queued, running]`."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    app = make_app(harness.controller, token=TOKEN, reports=DemandReports(running=True))
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        for command, shown in examples():
            script = command.replace(DOC_URL, f"http://127.0.0.1:{port}")
            script = script.replace(DOC_TOKEN_FILE, str(token_file))
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", script, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, command
            assert out.decode().split("\n") == shown.split("\n"), command
    finally:
        await runner.cleanup()
    # the last accepted body is the demand (the refused ones changed nothing)
    assert harness.controller.demand.queued == () and harness.controller.demand.running == ()


def test_the_schema_is_the_models_and_agrees_with_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    validator = jsonschema.Draft202012Validator(schema(capsys))
    bodies = [json.loads(b) for lang, b in blocks(DOC.read_text()) if lang == "json"]
    for command, _ in examples():
        heredoc = re.search(r"<<'EOF'\n(.*?)^EOF", command, flags=re.M | re.S)
        if heredoc:
            bodies.append(json.loads(heredoc.group(1)))
    assert len(bodies) == 4
    for body in bodies:
        try:
            parse_demand(body)
            accepted = True
        except DemandError:
            accepted = False
        assert validator.is_valid(body) == accepted, body
    assert [b for b in bodies if not validator.is_valid(b)] == [
        {"jobs": [{"cores": 2, "memory": "4 gigs", "count": 5}]}
    ]


def test_the_schema_describes_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    found = schema(capsys)
    for name, model in [("DemandBody", found), *found["$defs"].items()]:
        undocumented = [k for k, v in model["properties"].items() if not v.get("description")]
        assert undocumented == [], name
    assert found["properties"]["running"]["description"].startswith("Every running job")


def test_config_schema_carries_the_field_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    defs = json.loads(capsys.readouterr().out)["$defs"]
    assert defs["DemandConfig"]["properties"]["max_age"]["description"].startswith(
        "Pushed demand older than this is stale"
    )
    interval = defs["ScalerConfig"]["properties"]["interval"]
    assert interval["description"].startswith("Timer wake-up")
    assert {"type": "string"}.items() <= interval["anyOf"][1].items()  # "30s" is a duration


# --- every config key is in config.example.yaml -------------------------------------------


def schema_paths(schema: dict[str, Any], sections: set[str] | None = None) -> set[str]:
    """Dotted paths of every key the config schema allows (list items without an index; maps
    with free keys, such as provider.capacity, end at the map). ``sections`` receives the
    paths of the objects whose keys are fixed (``""``: the top level)."""
    defs = schema["$defs"]
    paths: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[1]], prefix)
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key, ()):
                walk(option, prefix)
        if "items" in node and isinstance(node["items"], dict):
            walk(node["items"], prefix)
        if "properties" in node and sections is not None:
            sections.add(prefix)
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            paths.add(path)
            walk(sub, path)

    walk(schema, "")
    return paths


# indentation, "# " (a commented-out key), more indentation, "# " again (an alternative
# inside a commented-out block), "- " (a list item), the key (lower case: "# Sizes: ..." is prose)
KEY_LINE = re.compile(r"^(\s*)(?:#\s?)?(\s*)(?:#\s?)?(?:-\s+)?([a-z_]\w*):(?:\s|$)")


def example_paths(text: str) -> set[str]:
    """Dotted paths of the keys config.example.yaml shows, set or commented out (``# key:``
    at the indentation it would have)."""
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if match is None:
            continue
        lead, inner, key = match.groups()
        indent = len(lead) + len(inner)
        if "- " in line[: match.start(3)]:  # a list item's first key sits under its dash
            indent = line.index("-") + 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [key])
        paths.add(path)
        stack.append((indent, key))
    return paths


def test_every_config_key_is_in_the_example() -> None:
    missing = schema_paths(ShoalConfig.model_json_schema()) - example_paths(EXAMPLE.read_text())
    assert sorted(missing) == []


def test_the_key_walk_sees_a_missing_key() -> None:
    text = EXAMPLE.read_text()
    cut = "\n".join(line for line in text.splitlines() if "max_age: 5m" not in line)
    missing = schema_paths(ShoalConfig.model_json_schema()) - example_paths(cut)
    assert missing == {"demand.max_age"}


def unknown_keys(text: str) -> list[str]:
    """Keys the example shows in a section with fixed keys that the config does not have
    (free maps such as provider.instance_types, and the values listed under a scalar key
    such as scaler.packing, are not sections)."""
    sections: set[str] = set()
    known = schema_paths(ShoalConfig.model_json_schema(), sections)
    return sorted(p for p in example_paths(text) - known if p.rpartition(".")[0] in sections)


def test_the_example_shows_no_key_the_config_lacks() -> None:
    """The other way round: a renamed or removed key does not stay documented."""
    text = EXAMPLE.read_text()
    assert unknown_keys(text) == []
    assert unknown_keys(text.replace("# price_refresh:", "# price_refreshing:", 1)) == [
        "provider.price_refreshing"
    ]
    # a key written at the wrong level is both missing where it belongs and unknown where it is
    moved = text.replace("  token_file: null ", "token_file: null ", 1)
    assert unknown_keys(moved) == ["token_file"]
    missing = schema_paths(ShoalConfig.model_json_schema()) - example_paths(moved)
    assert missing == {"api.token_file"}
