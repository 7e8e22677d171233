"""Job traces: the Standard Workload Format (SWF v2.2) and shoal's own CSV and JSON lines.

``read_trace(path, options)`` reads a whole trace into a compact, immutable ``Trace``:
one row per job (submit time, run time, requested wall time, ``Shape``, nodes: a job on
more than one node is a gang whose shape is per node), sorted by submit time, in numpy
columns with the distinct shapes kept once. The format comes from the file name
(``.swf``, ``.csv``, ``.jsonl``/``.ndjson``, each optionally ``.gz``), else from the
first line. Files are read line by line (a million lines take a few seconds).

A malformed line raises ``TraceError`` naming the file, the line number and the field, and
no trace is returned; with ``TraceOptions(skip_bad_lines=True)`` bad lines are left out,
counted in ``Trace.bad_lines`` and the first few kept in ``Trace.errors``.

**SWF** (Parallel Workloads Archive, v2.2): 18 whitespace-separated numeric fields per job,
``;`` comment lines, header comments ``; Key: value`` (``UnixStartTime``, ``MaxProcs``,
``MaxMemory``, ...; the numeric ones must be numbers) kept in ``Trace.header``;
``UnixStartTime`` becomes ``Trace.start_epoch``. Every field must be a finite number; the
fields used must be ``>= 0`` or ``-1`` (unknown). How a job is built, and the default
applied where a field is unknown (each reported once in ``Trace.defaults``, with the
number of lines it applied to)::

    submit     field 2; -1 -> the previous job's submit time (0 for the first)
    run time   field 4; -1 -> the requested time (field 9); both -1 -> 0 s
    wall time  field 9 (requested time); -1 -> the run time
    cores      field 5 (allocated processors); -1 or 0 -> field 8 (requested processors);
               both unknown -> 1
    nodes      processors split by cores per node: ceil(processors / cores per node)
               nodes of ceil(processors / nodes) cores each. Cores per node:
               options.cores_per_node, else the header's MaxProcs / MaxNodes rounded to a
               whole number (reported once as a default); neither -> one node of all the
               processors (no split)
    memory     field 10 (requested memory, KB per processor) x cores (per node); -1 ->
               field 7 (used memory, KB per processor) x cores; both -1 ->
               options.memory_per_core x cores (1 GiB per core)
    disk       SWF has none -> options.disk (0 B)
    preemptible  field 15 (queue number) in options.preemptible_queues (a best-effort
               queue) -> True; else options.preemptible (False: on-demand nodes only)

**CSV**: a header line naming columns from ``submit, cores, memory, disk, wall_time,
run_time, preemptible, nodes`` (any order; ``#`` lines and blank lines are skipped; quoted
cells are allowed, not line breaks inside them). **JSON lines**: one object per line with
the same keys. ``submit`` (seconds from the trace start), ``wall_time`` and ``run_time``
are durations and ``memory``/``disk`` sizes, in the config's syntax (``90``, ``"1h30m"``,
``"4GiB"``); ``preemptible`` is true/false (also yes/no, 1/0 in CSV). ``submit``,
``cores`` and ``memory`` are required, and ``run_time`` or ``wall_time`` (the missing one
takes the other's value); ``disk`` defaults to ``options.disk`` and ``preemptible`` to
``options.preemptible``; ``nodes`` (default 1) makes a job a gang of that many nodes, with
``cores``, ``memory`` and ``disk`` per node. An empty cell or a JSON ``null`` is unknown
and takes the default.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import operator
import os
import re
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np
from shoal.daemon.units import parse_duration, parse_size
from shoal.scaler.shape import Shape

__all__ = [
    "SWF_FIELDS",
    "DefaultUsed",
    "Trace",
    "TraceBuilder",
    "TraceError",
    "TraceJob",
    "TraceOptions",
    "detect_format",
    "read_trace",
]

log = logging.getLogger(__name__)

GiB = 1024**3
KiB = 1024

SWF_FIELDS = (
    "job number",
    "submit time",
    "wait time",
    "run time",
    "allocated processors",
    "average CPU time",
    "used memory",
    "requested processors",
    "requested time",
    "requested memory",
    "status",
    "user id",
    "group id",
    "executable number",
    "queue number",
    "partition number",
    "preceding job",
    "think time",
)
"""The 18 SWF v2.2 fields in file order (field N is ``SWF_FIELDS[N - 1]``)."""

# 0-based indices of the SWF fields shoal uses: each must be >= 0, or -1 for unknown.
_SUBMIT, _RUN, _ALLOC, _USED_MEM, _REQ_PROCS, _REQ_TIME, _REQ_MEM = 1, 3, 4, 6, 7, 8, 9
_QUEUE = 14
_SWF_USED = (_SUBMIT, _RUN, _ALLOC, _USED_MEM, _REQ_PROCS, _REQ_TIME, _REQ_MEM)
_SWF_NUMERIC_HEADERS = frozenset(
    {
        "UnixStartTime",
        "MaxJobs",
        "MaxRecords",
        "MaxNodes",
        "MaxProcs",
        "MaxRuntime",
        "MaxMemory",
        "MaxQueues",
        "MaxPartitions",
    }
)
_HEADER = re.compile(r";\s*([A-Za-z][A-Za-z0-9]*)\s*:\s*(.*)")
_NOTED = re.compile(r"(\S+)\s+\(.*\)")
_LIMIT = 1e15  # larger values are not plausible seconds, processors or KB

CSV_COLUMNS = (
    "submit",
    "cores",
    "memory",
    "disk",
    "wall_time",
    "run_time",
    "preemptible",
    "nodes",
)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """How to read a trace: bad-line handling and the defaults for unknown values."""

    skip_bad_lines: bool = False
    memory_per_core: int = GiB  # SWF: when requested and used memory are both unknown
    disk: int = 0  # SWF has no disk; CSV/JSONL without a disk value
    preemptible: bool = False  # SWF has no such field; CSV/JSONL without a value
    errors_kept: int = 10  # skip mode: how many bad lines to keep for the report
    # SWF: split jobs into nodes of this many cores (None: from the header, else no split)
    cores_per_node: int | None = None
    preemptible_queues: frozenset[int] = frozenset()  # SWF queue numbers (field 15)


class TraceError(ValueError):
    """A malformed trace line: ``path``, 1-based ``line`` (0: the file as a whole), ``field``."""

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        where = f"{path} line {line}" if line else path
        super().__init__(f"{where}, {field}: {message}")


@dataclass(frozen=True, slots=True)
class DefaultUsed:
    """One default applied while reading: which field, what was used, on how many lines."""

    field: str
    default: str
    lines: int
    first_line: int

    def __str__(self) -> str:
        plural = "line" if self.lines == 1 else "lines"
        return (
            f"{self.field}: {self.default} ({self.lines} {plural}, first at line {self.first_line})"
        )


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job: ``index`` is its position in the sorted trace (use it as the job's id).

    ``shape.wallTime`` is the requested wall time (what a scheduler reports as the expected
    run time); ``run_time`` is how long the job actually runs once started.
    """

    index: int
    submit: float  # seconds since the trace start
    run_time: float
    wall_time: float
    shape: Shape  # per node
    line: int  # line in the source file (0 for generated traces)
    nodes: int = 1  # > 1: a gang of that many nodes


def _frozen(values: Any, dtype: Any) -> np.ndarray:
    out = np.asarray(values, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Trace:
    """A job trace sorted by submit time (stable: ties keep file order), in columns.

    Iterate it for ``TraceJob`` rows or index it (``trace[i]``); the numpy columns
    (``submit``, ``run_time``, ``wall_time``, ``shape_index`` into ``shapes``, ``line``,
    ``nodes``: None when every job is on one node) are read-only.
    """

    source: str
    format: str  # "swf" | "csv" | "jsonl" | "synthetic"
    submit: np.ndarray
    run_time: np.ndarray
    wall_time: np.ndarray
    shape_index: np.ndarray
    line: np.ndarray
    shapes: tuple[Shape, ...]
    header: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    start_epoch: float | None = None  # SWF UnixStartTime: the epoch of submit time 0
    defaults: tuple[DefaultUsed, ...] = ()
    bad_lines: int = 0
    errors: tuple[TraceError, ...] = ()  # the first bad lines, in skip mode
    nodes: np.ndarray | None = None  # nodes per job; None: one each

    def nodes_of(self, index: int) -> int:
        return 1 if self.nodes is None else int(self.nodes[index])

    def __len__(self) -> int:
        return len(self.submit)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (``shoal simulate -j`` sends the trace to its workers): the header as a
        plain dict; ``__setstate__`` makes it and the columns read-only again."""
        return {**self.__dict__, "header": dict(self.header)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "header", MappingProxyType(dict(state["header"])))

    def __getitem__(self, index: int) -> TraceJob:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"job {index} out of range (trace has {len(self)} jobs)")
        return TraceJob(
            index,
            float(self.submit[index]),
            float(self.run_time[index]),
            float(self.wall_time[index]),
            self.shapes[int(self.shape_index[index])],
            int(self.line[index]),
            self.nodes_of(index),
        )

    def __iter__(self) -> Iterator[TraceJob]:
        shapes = self.shapes
        nodes = [1] * len(self) if self.nodes is None else self.nodes.tolist()
        rows = zip(
            self.submit.tolist(),
            self.run_time.tolist(),
            self.wall_time.tolist(),
            self.shape_index.tolist(),
            self.line.tolist(),
            nodes,
            strict=True,
        )
        for index, (submit, run, wall, shape, line, n) in enumerate(rows):
            yield TraceJob(index, submit, run, wall, shapes[shape], line, n)

    @property
    def span(self) -> float:
        """Seconds from the first submit to the last job's end if it started at once."""
        if not len(self):
            return 0.0
        return float(np.max(self.submit + self.run_time) - self.submit[0])


class TraceBuilder:
    """Collects jobs into columns, with shapes interned and defaults counted; ``build()``
    sorts them into a ``Trace``. The readers and the synthetic generator use it."""

    def __init__(self, source: str, fmt: str, options: TraceOptions | None = None) -> None:
        self.source = source
        self.format = fmt
        self.options = options or TraceOptions()
        self._submit = array("d")
        self._run = array("d")
        self._wall = array("d")
        self._shape = array("l")
        self._line = array("q")
        self._nodes = array("q")
        self._shapes: list[Shape] = []
        self._shape_ids: dict[tuple[float, float, float, float, bool], int] = {}
        self._defaults: dict[tuple[str, str], list[int]] = {}  # -> [lines, first line]
        self._whole_file: list[tuple[str, str]] = []
        self.header: dict[str, Any] = {}
        self.start_epoch: float | None = None
        self.bad_lines = 0
        self.errors: list[TraceError] = []

    def add(
        self,
        submit: float,
        run_time: float,
        wall_time: float,
        cores: float,
        memory: float,
        disk: float,
        preemptible: bool,
        line: int = 0,
        nodes: int = 1,
    ) -> None:
        key = (wall_time, memory, cores, disk, preemptible)
        index = self._shape_ids.get(key)
        if index is None:
            index = self._shape_ids[key] = len(self._shapes)
            self._shapes.append(Shape(wall_time, memory, cores, disk, preemptible))
        self._submit.append(submit)
        self._run.append(run_time)
        self._wall.append(wall_time)
        self._shape.append(index)
        self._line.append(line)
        self._nodes.append(nodes)

    def default(self, field_name: str, default: str, line: int) -> None:
        """Note that ``default`` stood in for an unknown ``field_name`` on ``line``."""
        seen = self._defaults.get((field_name, default))
        if seen is None:
            self._defaults[(field_name, default)] = [1, line]
        else:
            seen[0] += 1

    def default_for_all(self, field_name: str, default: str) -> None:
        """Note a default that stands in for a field the format lacks, on every job."""
        self._whole_file.append((field_name, default))

    def bad(self, error: TraceError) -> None:
        """A malformed line: raise it, or count it in skip mode."""
        if not self.options.skip_bad_lines:
            raise error
        self.bad_lines += 1
        if len(self.errors) < self.options.errors_kept:
            self.errors.append(error)

    def build(self) -> Trace:
        # Copies, so the builder's arrays stay free to grow (and to be dropped).
        submit = np.array(self._submit, dtype=np.float64)
        columns = [
            submit,
            np.array(self._run, dtype=np.float64),
            np.array(self._wall, dtype=np.float64),
            np.array(self._shape, dtype=np.int64),
            np.array(self._line, dtype=np.int64),
            np.array(self._nodes, dtype=np.int64),
        ]
        if len(submit) > 1 and bool(np.any(submit[1:] < submit[:-1])):
            order = np.argsort(submit, kind="stable")
            columns = [c[order] for c in columns]
        noted = dict(self._defaults)
        if len(self._line):
            first = int(min(self._line))
            for key in self._whole_file:
                noted[key] = [len(self._line), first]
        defaults = tuple(
            DefaultUsed(name, default, count, first)
            for (name, default), (count, first) in sorted(
                noted.items(), key=lambda item: (item[1][1], item[0])
            )
        )
        for d in defaults:
            log.info(
                "event=trace_default source=%s field=%r default=%r lines=%d first_line=%d",
                self.source,
                d.field,
                d.default,
                d.lines,
                d.first_line,
            )
        if self.bad_lines:
            log.warning(
                "event=trace_bad_lines source=%s skipped=%d first=%r",
                self.source,
                self.bad_lines,
                str(self.errors[0]) if self.errors else "",
            )
        return Trace(
            source=self.source,
            format=self.format,
            submit=_frozen(columns[0], np.float64),
            run_time=_frozen(columns[1], np.float64),
            wall_time=_frozen(columns[2], np.float64),
            shape_index=_frozen(columns[3], np.int64),
            line=_frozen(columns[4], np.int64),
            shapes=tuple(self._shapes),
            header=MappingProxyType(dict(self.header)),
            start_epoch=self.start_epoch,
            defaults=defaults,
            bad_lines=self.bad_lines,
            errors=tuple(self.errors),
            nodes=_frozen(columns[5], np.int64) if bool(np.any(columns[5] > 1)) else None,
        )


# --- format detection and opening ----------------------------------------------------------


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"swf"``, ``"csv"`` or ``"jsonl"`` from the file name, else from its first line."""
    name = Path(path).name.lower().removesuffix(".gz")
    for suffix, fmt in ((".swf", "swf"), (".csv", "csv"), (".jsonl", "jsonl")):
        if name.endswith(suffix):
            return fmt
    if name.endswith((".ndjson", ".json")):
        return "jsonl"
    with _open(Path(path)) as stream:
        for line in stream:
            text = line.strip()
            if not text:
                continue
            if text.startswith(";") or len(text.split()) == 18:
                return "swf"
            return "jsonl" if text.startswith("{") else "csv"
    return "swf"


def read_trace(
    path: str | os.PathLike[str], options: TraceOptions | None = None, fmt: str | None = None
) -> Trace:
    """Read a trace file (SWF, CSV or JSON lines; ``.gz`` too). Raises ``TraceError``
    (a malformed line, unless skipped) or ``OSError`` (the file cannot be read)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    readers = {"swf": _read_swf, "csv": _read_csv, "jsonl": _read_jsonl}
    if fmt not in readers:
        raise ValueError(f"unknown trace format {fmt!r}; expected one of {sorted(readers)}")
    builder = TraceBuilder(str(path), fmt, options)
    with _open(path) as stream:
        readers[fmt](stream, builder)
    return builder.build()


# --- SWF -----------------------------------------------------------------------------------


def _swf_field(index: int) -> str:
    return f"field {index + 1} ({SWF_FIELDS[index]})"


def _swf_header(builder: TraceBuilder, text: str, lineno: int) -> None:
    match = _HEADER.fullmatch(text)
    if not match:
        return  # a free-form comment
    key, value = match.group(1), match.group(2).strip()
    if key in _SWF_NUMERIC_HEADERS:
        # a number, or one and a note in brackets (CTC-SP2: "338 (batch partition; 512 total)")
        noted = _NOTED.fullmatch(value)
        try:
            number = float(noted.group(1) if noted else value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            builder.bad(
                TraceError(builder.source, lineno, f"header {key}", f"{value!r} is not a number")
            )
            return
        builder.header[key] = int(number) if number.is_integer() else number
        if key == "UnixStartTime":
            builder.start_epoch = float(number)
    elif key in builder.header:
        builder.header[key] = f"{builder.header[key]}\n{value}"
    else:
        builder.header[key] = value


def _swf_locate(builder: TraceBuilder, parts: list[str], lineno: int) -> TraceError:
    """The first bad field of a line whose fast parse failed."""
    for index, text in enumerate(parts):
        try:
            value = float(text)
        except ValueError:
            return TraceError(
                builder.source, lineno, _swf_field(index), f"{text!r} is not a number"
            )
        if not -_LIMIT < value < _LIMIT:
            return TraceError(
                builder.source, lineno, _swf_field(index), f"{text!r} is not a finite number"
            )
        if index in _SWF_USED and value < 0 and value != -1:
            return TraceError(
                builder.source,
                lineno,
                _swf_field(index),
                f"{text!r} is negative; expected >= 0, or -1 for unknown",
            )
    raise AssertionError(f"line {lineno} passed field by field")  # pragma: no cover


def _swf_cores_per_node(builder: TraceBuilder) -> float | None:
    """Cores per node for the split: the option, else MaxProcs / MaxNodes from the header
    (rounded to a whole number, at least 1; reported once), else None (no split)."""
    given = builder.options.cores_per_node
    if given is not None:
        return float(given)
    procs, nodes = builder.header.get("MaxProcs"), builder.header.get("MaxNodes")
    if not procs or not nodes or procs <= 0 or nodes <= 0:
        return None
    cores = max(1, math.floor(procs / nodes + 0.5))  # half up
    builder.default_for_all(
        "cores per node", f"{cores} (header MaxProcs {procs} / MaxNodes {nodes}, rounded)"
    )
    return float(cores)


def _read_swf(stream: IO[str], builder: TraceBuilder) -> None:
    options = builder.options
    disk, preemptible, per_core = options.disk, options.preemptible, options.memory_per_core
    queues = options.preemptible_queues
    builder.default_for_all("disk", f"{disk} B (SWF has no disk field)")
    if queues:
        builder.default_for_all(
            "preemptible",
            f"True in queues {', '.join(map(str, sorted(queues)))} (field 15), else {preemptible}",
        )
    else:
        builder.default_for_all("preemptible", f"{preemptible} (SWF has no such field)")
    per_node: float | None = None  # from the header, which comes before the jobs
    header_read = False
    note = builder.default
    add = builder.add
    isfinite = math.isfinite
    pick = operator.itemgetter(*_SWF_USED)
    prev_submit = 0.0
    for lineno, raw in enumerate(stream, 1):
        text = raw.strip()
        if not text:
            continue
        if text[0] == ";":
            _swf_header(builder, text, lineno)
            continue
        if not header_read:
            per_node = _swf_cores_per_node(builder)
            header_read = True
        parts = text.split()
        if len(parts) != 18:
            builder.bad(
                TraceError(builder.source, lineno, "line", f"expected 18 fields, got {len(parts)}")
            )
            continue
        try:
            v = list(map(float, parts))
        except ValueError:
            builder.bad(_swf_locate(builder, parts, lineno))
            continue
        used = pick(v)
        if not isfinite(sum(v)) or (min(used) < 0 and any(x < 0 and x != -1 for x in used)):
            builder.bad(_swf_locate(builder, parts, lineno))
            continue
        submit, run, req_time = v[_SUBMIT], v[_RUN], v[_REQ_TIME]
        if submit == -1:
            submit = prev_submit
            note(_swf_field(_SUBMIT), "unknown (-1): the previous job's submit time", lineno)
        prev_submit = submit
        if run == -1:
            if req_time != -1:
                run = req_time
                note(_swf_field(_RUN), "unknown (-1): the requested time (field 9)", lineno)
            else:
                run = 0.0
                note(_swf_field(_RUN), "unknown (-1), requested time too: 0 s", lineno)
        if req_time == -1:
            req_time = run
            note(_swf_field(_REQ_TIME), "unknown (-1): the run time", lineno)
        cores = v[_ALLOC]
        if cores <= 0:
            cores = v[_REQ_PROCS]
            if cores > 0:
                note(
                    _swf_field(_ALLOC), "unknown (-1 or 0): requested processors (field 8)", lineno
                )
            else:
                cores = 1.0
                note(_swf_field(_ALLOC), "unknown (-1 or 0), requested too: 1 processor", lineno)
        nodes = 1
        if per_node is not None and cores > per_node:
            nodes = math.ceil(cores / per_node)
            cores = float(math.ceil(cores / nodes))
        kb = v[_REQ_MEM]
        if kb == -1:
            kb = v[_USED_MEM]
            if kb != -1:
                note(_swf_field(_REQ_MEM), "unknown (-1): used memory (field 7)", lineno)
        if kb == -1:
            memory = float(per_core) * cores
            note(
                _swf_field(_REQ_MEM),
                f"unknown (-1), used memory too: {per_core} B per processor",
                lineno,
            )
        else:
            memory = kb * KiB * cores
        queued_preemptible = preemptible or (bool(queues) and int(v[_QUEUE]) in queues)
        add(submit, run, req_time, cores, memory, disk, queued_preemptible, lineno, nodes)


# --- CSV and JSON lines --------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "0", "n", "f"})


def _cached(parse: Callable[[Any], float]) -> Callable[[Any], float]:
    """``parse`` with a fast path for plain numbers and a bounded cache of unit strings."""
    cache: dict[str, float] = {}

    def convert(value: Any) -> float:
        if isinstance(value, str):
            hit = cache.get(value)
            if hit is not None:
                return hit
            try:
                number = float(value)
            except ValueError:
                result = float(parse(value))
            else:
                result = float(parse(number))
            if len(cache) < 65536:
                cache[value] = result
            return result
        return float(parse(value))

    return convert


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number of {what}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of {what}") from None


def _cores(value: Any) -> float:
    number = _number(value, "cores")
    if not (0 < number < _LIMIT):
        raise ValueError(f"{value!r} is not a positive, finite number of cores")
    return number


def _nodes(value: Any) -> int:
    number = _number(value, "nodes")
    if not number.is_integer() or not 1 <= number <= 100_000:
        raise ValueError(f"{value!r} is not a whole number of nodes from 1 to 100000")
    return int(number)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{value!r} is not true or false")


class _Rows:
    """Turns one row (column -> raw value, None when unknown) into a job."""

    def __init__(self, builder: TraceBuilder) -> None:
        self.builder = builder
        self.duration = _cached(parse_duration)
        self.size = _cached(parse_size)

    def add(self, row: Mapping[str, Any], lineno: int) -> None:
        b = self.builder
        name = ""
        try:
            name = "submit"
            submit = self.duration(_required(row, name))
            name = "cores"
            cores = _cores(_required(row, name))
            name = "memory"
            memory = self.size(_required(row, name))
            name = "run_time"
            run = row.get(name)
            wall = row.get("wall_time")
            if run is None and wall is None:
                raise ValueError("required (or wall_time); both are missing")
            name = "wall_time"
            wall = None if wall is None else self.duration(wall)
            name = "run_time"
            run = None if run is None else self.duration(run)
            name = "disk"
            disk = row.get(name)
            disk = b.options.disk if disk is None else self.size(disk)
            name = "preemptible"
            preemptible = row.get(name)
            preemptible = b.options.preemptible if preemptible is None else _bool(preemptible)
            name = "nodes"
            nodes = row.get(name)
            nodes = 1 if nodes is None else _nodes(nodes)
        except ValueError as exc:
            b.bad(TraceError(b.source, lineno, name, str(exc)))
            return
        if run is None:
            run = wall
            b.default("run_time", "unknown: the wall time", lineno)
        if wall is None:
            wall = run
            b.default("wall_time", "unknown: the run time", lineno)
        if row.get("disk") is None:
            b.default("disk", f"unknown: {b.options.disk} B", lineno)
        if row.get("preemptible") is None:
            b.default("preemptible", f"unknown: {b.options.preemptible}", lineno)
        b.add(submit, run, wall, cores, memory, disk, preemptible, lineno, nodes)


def _required(row: Mapping[str, Any], name: str) -> Any:
    value = row.get(name)
    if value is None:
        raise ValueError("required; the value is missing")
    return value


def _split_csv(line: str) -> list[str]:
    if '"' in line:
        return next(csv.reader([line]))
    return line.split(",")


def _read_csv(stream: IO[str], builder: TraceBuilder) -> None:
    rows = _Rows(builder)
    columns: list[str] | None = None
    for lineno, raw in enumerate(stream, 1):
        text = raw.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in _split_csv(text)]
        if columns is None:
            columns = [c.lower() for c in cells]
            _check_columns(builder, columns, lineno)
            continue
        if len(cells) != len(columns):
            builder.bad(
                TraceError(
                    builder.source,
                    lineno,
                    "line",
                    f"expected {len(columns)} fields ({','.join(columns)}), got {len(cells)}",
                )
            )
            continue
        rows.add({k: (v if v else None) for k, v in zip(columns, cells, strict=True)}, lineno)


def _check_columns(builder: TraceBuilder, columns: list[str], lineno: int) -> None:
    """Header problems are never skippable: every row would be wrong."""
    source = builder.source
    for name in columns:
        if name not in CSV_COLUMNS:
            raise TraceError(
                source,
                lineno,
                name or "(empty)",
                f"unknown column; expected {', '.join(CSV_COLUMNS)}",
            )
        if columns.count(name) > 1:
            raise TraceError(source, lineno, name, "column appears more than once")
    for name in ("submit", "cores", "memory"):
        if name not in columns:
            raise TraceError(source, lineno, name, "required column is missing")
    if "run_time" not in columns and "wall_time" not in columns:
        raise TraceError(source, lineno, "run_time", "required column (or wall_time) is missing")


def _read_jsonl(stream: IO[str], builder: TraceBuilder) -> None:
    rows = _Rows(builder)
    for lineno, raw in enumerate(stream, 1):
        text = raw.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            builder.bad(
                TraceError(
                    builder.source, lineno, "line", f"not JSON: {exc.msg} at column {exc.colno}"
                )
            )
            continue
        if not isinstance(data, dict):
            builder.bad(
                TraceError(
                    builder.source,
                    lineno,
                    "line",
                    f"expected a JSON object, got {type(data).__name__}",
                )
            )
            continue
        unknown = sorted(set(data) - set(CSV_COLUMNS))
        if unknown:
            builder.bad(
                TraceError(
                    builder.source,
                    lineno,
                    str(unknown[0]),
                    f"unknown key; expected {', '.join(CSV_COLUMNS)}",
                )
            )
            continue
        rows.add(data, lineno)
