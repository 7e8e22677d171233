"""README.md's simulate example, made by running it: the table and ``docs/simulate-report.png``.

    .venv/bin/python scripts/readme_simulate.py           # run the example, rewrite both
    .venv/bin/python scripts/readme_simulate.py --check   # exit 1 if either is stale

The example is the block of README.md between ``<!-- simulate-example`` and
``<!-- /simulate-example -->``: a ``shoal simulate`` command (4-space indented, ``\\`` line
continuations), a blank line, and the table it printed. The script runs that exact command
(in this process, through ``shoal.daemon.cli.main``; only ``--out`` is pointed at a
temporary directory), then writes the table it prints under the command, and the report's
``nodes.png`` to ``docs/simulate-report.png``.

The picture is checked through the report it was drawn from, not its bytes: PNG bytes
depend on the matplotlib (and FreeType) that drew them, the report does not (``report.json``
is byte-identical for the same trace, config and seed). So the script adds two ``tEXt``
chunks after the PNG's header (the image data is ``nodes.png``'s, untouched): the sha256 of
the ``report.json`` it came from and the matplotlib version that drew it. ``--check`` fails
when the fresh report's hash differs; with the same matplotlib it also compares the image
bytes. ``tests/simulate/test_readme_example.py`` runs the check in ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import shlex
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PICTURE = ROOT / "docs" / "simulate-report.png"

BEGIN = "<!-- simulate-example"
END = "<!-- /simulate-example -->"
INDENT = "    "
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEY_REPORT = "shoal report.json sha256"
KEY_MATPLOTLIB = "shoal matplotlib"


class ExampleError(ValueError):
    """README.md has no example block this script can read."""


@dataclass(frozen=True)
class Example:
    """What the README's command gives today."""

    command: tuple[str, ...]  # the README's lines of the command, as written
    table: str  # the table it prints, one line per row, no trailing newline
    report_sha256: str
    nodes_png: bytes


def _block(text: str) -> tuple[int, int]:
    """The offsets of the lines between the markers (after the line ending the first)."""
    begin = text.find(BEGIN)
    end = text.find(END)
    if begin < 0 or end < begin:
        raise ExampleError(f"README.md has no {BEGIN} ... {END} block")
    return text.index("\n", text.index("-->", begin)) + 1, end


def command_lines(readme: str) -> tuple[str, ...]:
    """The indented ``shoal simulate ...`` line and its ``\\`` continuations."""
    start, end = _block(readme)
    lines = readme[start:end].splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip().startswith("shoal ")), None)
    if first is None:
        raise ExampleError("the simulate-example block has no `shoal simulate` command")
    out = [lines[first]]
    while out[-1].rstrip().endswith("\\"):
        out.append(lines[first + len(out)])
    return tuple(out)


def argv_of(lines: tuple[str, ...]) -> list[str]:
    argv = shlex.split(" ".join(line.rstrip().removesuffix("\\") for line in lines))
    if argv[:2] != ["shoal", "simulate"] or "--out" not in argv:
        raise ExampleError(f"expected `shoal simulate ... --out DIR`, not {' '.join(argv)!r}")
    return argv


def run_example(readme: str) -> Example:
    """Run the README's command (cwd: the repository root, for its relative paths)."""
    from shoal.daemon.cli import main

    lines = command_lines(readme)
    argv = argv_of(lines)
    with tempfile.TemporaryDirectory(prefix="readme-simulate-") as tmp, contextlib.chdir(ROOT):
        argv[argv.index("--out") + 1] = tmp
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(argv[1:])
        if status != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {status}: {stderr.getvalue()}")
        table = stdout.getvalue().split("\nreport: ", 1)[0].rstrip("\n")
        report = (Path(tmp) / "report.json").read_bytes()
        nodes = (Path(tmp) / "nodes.png").read_bytes()
    return Example(lines, table, hashlib.sha256(report).hexdigest(), nodes)


def render(example: Example) -> str:
    """The block's lines between the markers."""
    table = "\n".join(f"{INDENT}{row}".rstrip() for row in example.table.splitlines())
    return "\n" + "\n".join(example.command) + "\n\n" + table + "\n\n"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    if png[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG")
    pos, out = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def stamp(png: bytes, report_sha256: str, matplotlib_version: str) -> bytes:
    """``png`` with the report's hash and matplotlib's version in ``tEXt`` chunks after IHDR."""
    chunks = _chunks(png)
    ihdr_end = 8 + 12 + len(chunks[0][1])
    texts = _chunk(b"tEXt", f"{KEY_REPORT}\0{report_sha256}".encode()) + _chunk(
        b"tEXt", f"{KEY_MATPLOTLIB}\0{matplotlib_version}".encode()
    )
    return png[:ihdr_end] + texts + png[ihdr_end:]


def texts(png: bytes) -> dict[str, str]:
    pairs = (body.split(b"\0", 1) for kind, body in _chunks(png) if kind == b"tEXt")
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in pairs}


def unstamped(png: bytes) -> bytes:
    """``png`` without the chunks ``stamp`` added: the bytes matplotlib wrote."""
    out = PNG_SIGNATURE
    for kind, body in _chunks(png):
        if kind == b"tEXt" and body.split(b"\0", 1)[0].decode("latin-1").startswith("shoal "):
            continue
        out += _chunk(kind, body)
    return out


def _matplotlib_version() -> str:
    import matplotlib

    return str(matplotlib.__version__)


def update(readme_path: Path = README, picture: Path = PICTURE) -> Example:
    readme = readme_path.read_text()
    example = run_example(readme)
    start, end = _block(readme)
    readme_path.write_text(readme[:start] + render(example) + readme[end:])
    picture.write_bytes(stamp(example.nodes_png, example.report_sha256, _matplotlib_version()))
    return example


def check(readme_path: Path = README, picture: Path = PICTURE) -> list[str]:
    """What is stale: an empty list when README.md and the picture are what the command
    gives today."""
    readme = readme_path.read_text()
    example = run_example(readme)
    start, end = _block(readme)
    problems = []
    if readme[start:end] != render(example):
        problems.append(
            f"{readme_path.name}: the simulate example's table is not what its command prints "
            f"today, which is:\n{example.table}"
        )
    stamps = texts(picture.read_bytes()) if picture.exists() else {}
    if stamps.get(KEY_REPORT) != example.report_sha256:
        problems.append(
            f"{picture.name} was not drawn from the report the command writes today "
            f"(report.json sha256 {example.report_sha256}, the picture says "
            f"{stamps.get(KEY_REPORT)})"
        )
    elif (
        stamps.get(KEY_MATPLOTLIB) == _matplotlib_version()
        and unstamped(picture.read_bytes()) != example.nodes_png
    ):
        problems.append(f"{picture.name} differs from the nodes.png the same report draws")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: .venv/bin/python scripts/readme_simulate.py", file=sys.stderr)
        return 1 if problems else 0
    example = update()
    print(f"README.md and {PICTURE.relative_to(ROOT)} written; report.json sha256 "
          f"{example.report_sha256}:\n{example.table}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
