"""Trace readers: SWF v2.2, shoal's CSV and JSON lines, defaults, malformed lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from shoal.daemon.simulate.trace import (
    SWF_FIELDS,
    TraceError,
    TraceOptions,
    detect_format,
    read_trace,
)
from shoal.scaler.shape import Shape

GiB = 1024**3
KB = 1024

# Every field known. Job 2 was submitted before job 1 finished: fields in file order are
# job, submit, wait, run, alloc procs, cpu, used mem KB/proc, req procs, req time,
# req mem KB/proc, status, user, group, exe, queue, partition, preceding job, think time.
FULL_SWF = """\
; Version: 2.2
; Computer: Synthetic test machine
; UnixStartTime: 1700000000
; MaxProcs: 64
; MaxNodes: 8
; MaxMemory: 8388608
; Note: first note
; Note: second note
;
1    0   5  3600 4  3500  1048576  4  7200  2097152  1 3 1 1 1 1 -1 -1
2   60   0   120 1   100   524288  2   600   524288  1 3 1 2 1 1  1 30
3   90  10  0.5 16  0.25  2097152 16  3600  4194304  5 4 2 3 2 1 -1 -1
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_swf_with_every_field(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "full.swf", FULL_SWF))
    assert trace.format == "swf"
    assert len(trace) == 3
    assert trace.start_epoch == 1700000000.0
    assert trace.header["MaxProcs"] == 64
    assert trace.header["MaxNodes"] == 8
    assert trace.header["MaxMemory"] == 8388608
    assert trace.header["Computer"] == "Synthetic test machine"
    assert trace.header["Note"] == "first note\nsecond note"
    jobs = list(trace)
    # allocated processors and requested memory (KB per processor) x processors
    assert jobs[0].submit == 0.0
    assert jobs[0].run_time == 3600.0
    assert jobs[0].wall_time == 7200.0
    assert jobs[0].shape == Shape(7200.0, 4 * 2097152 * KB, 4, 0, False)
    assert jobs[0].line == 10
    assert jobs[1].shape == Shape(600.0, 1 * 524288 * KB, 1, 0, False)
    assert (jobs[2].submit, jobs[2].run_time) == (90.0, 0.5)
    # 16 processors on nodes of MaxProcs / MaxNodes = 8 cores: 2 nodes of 8 cores each,
    # memory per processor kept
    assert jobs[2].shape == Shape(3600.0, 8 * 4194304 * KB, 8, 0, False)
    assert [j.nodes for j in jobs] == [1, 1, 2]
    assert [j.index for j in jobs] == [0, 1, 2]
    assert trace[1] == jobs[1]
    assert trace[-1] == jobs[2]
    # Only the fields SWF lacks took a default, each once for the whole file.
    assert [(d.field, d.lines, d.first_line) for d in trace.defaults] == [
        ("cores per node", 3, 10),
        ("disk", 3, 10),
        ("preemptible", 3, 10),
    ]
    assert trace.bad_lines == 0
    assert trace.span == 3600.0


def test_swf_options_set_the_missing_fields(tmp_path: Path) -> None:
    options = TraceOptions(disk=2 * GiB, preemptible=True)
    trace = read_trace(write(tmp_path, "full.swf", FULL_SWF), options)
    assert {(j.shape.disk, j.shape.preemptible) for j in trace} == {(2 * GiB, True)}
    assert "2147483648 B" in str(trace.defaults[1])


def swf_line(**fields: float) -> str:
    """One SWF line with every field known; override by 1-based field number, e.g. f4=-1."""
    values = [7, 100, 0, 600, 2, 500, 262144, 2, 1200, 524288, 1, 1, 1, 1, 1, 1, -1, -1]
    for key, value in fields.items():
        values[int(key[1:]) - 1] = value
    return " ".join(str(v) for v in values)


UNKNOWN_CASES = [
    # (overrides, expected (submit, run, wall, cores, memory), expected default text)
    pytest.param({"f2": -1}, (50, 600, 1200, 2, 2 * 524288 * KB), "previous job", id="submit"),
    pytest.param({"f4": -1}, (100, 1200, 1200, 2, 2 * 524288 * KB), "requested time", id="run"),
    pytest.param(
        {"f4": -1, "f9": -1}, (100, 0, 0, 2, 2 * 524288 * KB), "0 s", id="run-and-requested"
    ),
    pytest.param({"f9": -1}, (100, 600, 600, 2, 2 * 524288 * KB), "the run time", id="wall"),
    pytest.param(
        {"f5": -1, "f8": 4}, (100, 600, 1200, 4, 4 * 524288 * KB), "requested proc", id="alloc"
    ),
    pytest.param(
        {"f5": 0, "f8": 4}, (100, 600, 1200, 4, 4 * 524288 * KB), "requested proc", id="alloc-0"
    ),
    pytest.param(
        {"f5": -1, "f8": -1}, (100, 600, 1200, 1, 1 * 524288 * KB), "1 processor", id="procs"
    ),
    pytest.param(
        {"f10": -1}, (100, 600, 1200, 2, 2 * 262144 * KB), "used memory (field 7)", id="req-mem"
    ),
    pytest.param({"f10": -1, "f7": -1}, (100, 600, 1200, 2, 2 * GiB), "per processor", id="memory"),
]


@pytest.mark.parametrize(("overrides", "expected", "default"), UNKNOWN_CASES)
def test_swf_unknown_fields_take_a_documented_default(
    tmp_path: Path, overrides: dict[str, float], expected: tuple[float, ...], default: str
) -> None:
    first = swf_line(f1=1, f2=50)
    text = f"{first}\n" + "\n".join(swf_line(**overrides) for _ in range(3)) + "\n"
    trace = read_trace(write(tmp_path, "unknown.swf", text))
    job = trace[1]
    got = (job.submit, job.run_time, job.wall_time, job.shape.cores, job.shape.memory)
    assert got == expected
    assert job.shape.wallTime == job.wall_time
    noted = [d for d in trace.defaults if d.field not in ("disk", "preemptible")]
    # Once per field however many lines: three lines, one entry, counted three times.
    assert len({d.field for d in noted}) == len(noted), noted
    assert [d.default for d in noted if default in d.default], noted
    assert {(d.lines, d.first_line) for d in noted} == {(3, 2)}
    assert all(d.field.startswith("field ") for d in noted)


def test_swf_unknown_submit_of_the_first_job_is_zero(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "t.swf", swf_line(f2=-1) + "\n"))
    assert trace[0].submit == 0.0


MALFORMED = [
    pytest.param(swf_line() + " 9", "line", "expected 18 fields, got 19", id="too-many"),
    pytest.param("1 2 3", "line", "expected 18 fields, got 3", id="too-few"),
    pytest.param(swf_line(f4="abc"), "field 4 (run time)", "'abc' is not a number", id="text"),
    pytest.param(swf_line(f4=-2), "field 4 (run time)", "is negative", id="negative"),
    pytest.param(swf_line(f10=-0.5), "field 10 (requested memory)", "negative", id="neg-frac"),
    pytest.param(swf_line(f2="nan"), "field 2 (submit time)", "not a finite", id="nan"),
    pytest.param(swf_line(f9="inf"), "field 9 (requested time)", "not a finite", id="inf"),
    pytest.param(swf_line(f18="1e400"), "field 18 (think time)", "not a finite", id="huge"),
    pytest.param(swf_line(f11="x"), "field 11 (status)", "not a number", id="unused-field"),
    pytest.param("; UnixStartTime: yesterday", "header UnixStartTime", "not a number", id="hdr"),
]


@pytest.mark.parametrize(("bad", "field", "message"), MALFORMED)
def test_swf_malformed_line_names_file_line_and_field(
    tmp_path: Path, bad: str, field: str, message: str
) -> None:
    text = "; Version: 2.2\n" + swf_line(f1=1) + "\n\n" + bad + "\n" + swf_line(f1=3) + "\n"
    path = write(tmp_path, "bad.swf", text)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    err = caught.value
    assert (err.path, err.line, err.field) == (str(path), 4, field)
    assert message in err.message
    assert str(path) in str(err)
    assert "line 4" in str(err)
    assert field in str(err)


def test_swf_skip_mode_counts_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    bad = [swf_line(f4="x"), "1 2 3", swf_line(f5=-7), swf_line(f2="nan")]
    good = [swf_line(f1=i, f2=i * 10) for i in range(5)]
    lines = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4]]
    path = write(tmp_path, "mixed.swf", "\n".join(lines) + "\n")
    trace = read_trace(path, TraceOptions(skip_bad_lines=True, errors_kept=2))
    assert len(trace) == 5
    assert [j.submit for j in trace] == [0, 10, 20, 30, 40]
    assert trace.bad_lines == 4
    assert [(e.line, e.field) for e in trace.errors] == [(2, "field 4 (run time)"), (4, "line")]


def test_swf_sorted_by_submit_stably(tmp_path: Path) -> None:
    lines = [
        swf_line(f1=1, f2=300, f4=1),
        swf_line(f1=2, f2=100, f4=2),
        swf_line(f1=3, f2=300, f4=3),
        swf_line(f1=4, f2=100, f4=4),
    ]
    trace = read_trace(write(tmp_path, "unsorted.swf", "\n".join(lines)))
    assert [(j.submit, j.run_time, j.line) for j in trace] == [
        (100, 2, 2),
        (100, 4, 4),
        (300, 1, 1),
        (300, 3, 3),
    ]
    assert [j.index for j in trace] == [0, 1, 2, 3]


def test_swf_gzip(tmp_path: Path) -> None:
    path = tmp_path / "full.swf.gz"
    with gzip.open(path, "wt") as f:
        f.write(FULL_SWF)
    trace = read_trace(path)
    assert len(trace) == 3
    assert trace.start_epoch == 1700000000.0


def test_shapes_are_shared_between_jobs(tmp_path: Path) -> None:
    text = "\n".join(swf_line(f1=i, f2=i) for i in range(50))
    trace = read_trace(write(tmp_path, "same.swf", text))
    assert len(trace) == 50
    assert len(trace.shapes) == 1
    assert trace.shape_index.tolist() == [0] * 50


def test_trace_columns_are_read_only(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "full.swf", FULL_SWF))
    with pytest.raises(ValueError, match="read-only"):
        trace.submit[0] = 5.0


def test_swf_fields_are_the_18_of_version_2_2() -> None:
    assert len(SWF_FIELDS) == 18
    assert SWF_FIELDS[3] == "run time"
    assert SWF_FIELDS[9] == "requested memory"


# --- CSV -----------------------------------------------------------------------------------

FULL_CSV = """\
# shoal trace
submit,cores,memory,disk,wall_time,run_time,preemptible
0,1,2GiB,10GiB,1h,30m,false
90s,4,"8GiB",0,2h,1h30m,true

1m,0.5,512MiB,1G,600,590.5,yes
"""


def test_csv_with_every_column(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "jobs.csv", FULL_CSV))
    assert trace.format == "csv"
    jobs = list(trace)
    assert [(j.submit, j.run_time, j.wall_time) for j in jobs] == [
        (0, 1800, 3600),
        (60, 590.5, 600),
        (90, 5400, 7200),
    ]
    assert jobs[0].shape == Shape(3600, 2 * GiB, 1, 10 * GiB, False)
    assert jobs[1].shape == Shape(600, 512 * 1024**2, 0.5, 10**9, True)
    assert jobs[2].shape == Shape(7200, 8 * GiB, 4, 0, True)
    assert [j.line for j in jobs] == [3, 6, 4]
    assert trace.defaults == ()


def test_csv_missing_columns_take_defaults_once(tmp_path: Path) -> None:
    text = "cores,submit,memory,run_time\n1,0,1GiB,60\n2,5,2GiB,\n"
    path = write(tmp_path, "min.csv", text)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert (caught.value.line, caught.value.field) == (3, "run_time")
    text = "cores,submit,memory,run_time,wall_time\n1,0,1GiB,60,\n2,5,2GiB,,2m\n3,6,1GiB,1m,\n"
    trace = read_trace(write(tmp_path, "min.csv", text), TraceOptions(disk=GiB))
    assert [(j.run_time, j.wall_time, j.shape.disk) for j in trace] == [
        (60, 60, GiB),
        (120, 120, GiB),
        (60, 60, GiB),
    ]
    assert {(d.field, d.lines, d.first_line) for d in trace.defaults} == {
        ("wall_time", 2, 2),
        ("run_time", 1, 3),
        ("disk", 3, 2),
        ("preemptible", 3, 2),
    }


CSV_MALFORMED = [
    pytest.param("0,1,1GiB,x", 2, "run_time", "duration", id="bad-duration"),
    pytest.param("0,1,lots,60", 2, "memory", "size", id="bad-size"),
    pytest.param("0,-1,1GiB,60", 2, "cores", "positive", id="negative-cores"),
    pytest.param("0,0,1GiB,60", 2, "cores", "positive", id="zero-cores"),
    pytest.param("-5,1,1GiB,60", 2, "submit", "negative", id="negative-submit"),
    pytest.param(",1,1GiB,60", 2, "submit", "required", id="empty-submit"),
    pytest.param("0,1,1GiB", 2, "line", "expected 4 fields", id="short-row"),
    pytest.param("0,1,1GiB,nan", 2, "run_time", "finite", id="nan"),
]


@pytest.mark.parametrize(("row", "line", "field", "message"), CSV_MALFORMED)
def test_csv_malformed_line(tmp_path: Path, row: str, line: int, field: str, message: str) -> None:
    path = write(tmp_path, "bad.csv", f"submit,cores,memory,run_time\n{row}\n0,1,1GiB,60\n")
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)
    assert message in caught.value.message
    skipped = read_trace(path, TraceOptions(skip_bad_lines=True))
    assert (len(skipped), skipped.bad_lines) == (1, 1)


CSV_BAD_HEADER = [
    pytest.param("submit,cores,memory,run_time,gpus", "gpus", "unknown column", id="unknown"),
    pytest.param("submit,cores,run_time", "memory", "required column", id="no-memory"),
    pytest.param("submit,cores,memory", "run_time", "or wall_time", id="no-time"),
    pytest.param("submit,cores,cores,memory,run_time", "cores", "more than once", id="twice"),
]


@pytest.mark.parametrize(("header", "field", "message"), CSV_BAD_HEADER)
def test_csv_bad_header_is_never_skipped(
    tmp_path: Path, header: str, field: str, message: str
) -> None:
    path = write(tmp_path, "h.csv", f"{header}\n")
    with pytest.raises(TraceError) as caught:
        read_trace(path, TraceOptions(skip_bad_lines=True))
    assert (caught.value.line, caught.value.field) == (1, field)
    assert message in caught.value.message


# --- JSON lines ----------------------------------------------------------------------------


def test_jsonl(tmp_path: Path) -> None:
    text = (
        '{"submit": 0, "cores": 2, "memory": "4GiB", "run_time": "10m", "preemptible": true}\n'
        "\n"
        '{"submit": "1h", "cores": 1, "memory": 1073741824, "disk": "1GiB",'
        ' "wall_time": 7200, "run_time": 3600.5, "preemptible": null}\n'
    )
    trace = read_trace(write(tmp_path, "jobs.jsonl", text))
    assert trace.format == "jsonl"
    jobs = list(trace)
    assert jobs[0].shape == Shape(600, 4 * GiB, 2, 0, True)
    assert (jobs[1].submit, jobs[1].run_time, jobs[1].wall_time) == (3600, 3600.5, 7200)
    assert jobs[1].shape == Shape(7200, GiB, 1, GiB, False)
    assert [j.line for j in jobs] == [1, 3]
    assert {d.field: d.lines for d in trace.defaults} == {
        "wall_time": 1,
        "disk": 1,
        "preemptible": 1,
    }


JSONL_MALFORMED = [
    pytest.param('{"submit": 0, "cores": 1, "memory": 1', "line", "not JSON", id="json"),
    pytest.param("[1, 2]", "line", "expected a JSON object", id="list"),
    pytest.param(
        '{"submit": 0, "cores": 1, "memory": 1, "run_time": 1, "gpu": 1}',
        "gpu",
        "unknown key",
        id="unknown-key",
    ),
    pytest.param(
        '{"submit": 0, "cores": true, "memory": 1, "run_time": 1}', "cores", "cores", id="bool"
    ),
    pytest.param(
        '{"submit": 0, "cores": 1, "memory": 1, "run_time": 1, "preemptible": "maybe"}',
        "preemptible",
        "true or false",
        id="preemptible",
    ),
    pytest.param('{"cores": 1, "memory": 1, "run_time": 1}', "submit", "required", id="missing"),
]


@pytest.mark.parametrize(("line", "field", "message"), JSONL_MALFORMED)
def test_jsonl_malformed_line(tmp_path: Path, line: str, field: str, message: str) -> None:
    good = '{"submit": 0, "cores": 1, "memory": "1GiB", "run_time": 60}'
    path = write(tmp_path, "bad.jsonl", f"{good}\n{line}\n{good}\n")
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert (caught.value.line, caught.value.field) == (2, field)
    assert message in caught.value.message
    skipped = read_trace(path, TraceOptions(skip_bad_lines=True))
    assert (len(skipped), skipped.bad_lines) == (2, 1)


# --- format detection ----------------------------------------------------------------------

SNIFF = [
    pytest.param("; Version: 2.2\n", "swf", id="swf-header"),
    pytest.param(swf_line() + "\n", "swf", id="swf-line"),
    pytest.param('\n{"submit": 0}\n', "jsonl", id="jsonl"),
    pytest.param("submit,cores,memory,run_time\n", "csv", id="csv"),
]


@pytest.mark.parametrize(("text", "fmt"), SNIFF)
def test_format_from_the_first_line_when_the_name_does_not_say(
    tmp_path: Path, text: str, fmt: str
) -> None:
    assert detect_format(write(tmp_path, "trace.txt", text)) == fmt


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.swf", "swf"), ("a.SWF.gz", "swf"), ("a.csv", "csv"), ("a.ndjson", "jsonl")],
)
def test_format_from_the_name(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_empty_trace(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "empty.swf", "; Version: 2.2\n"))
    assert len(trace) == 0
    assert trace.defaults == ()
    assert trace.span == 0.0
    assert list(trace) == []


# queue number is field 15
GANG_SWF = """\
; MaxProcs: 100
; MaxNodes: 8
1  0 0 600 48 -1 1048576 48 1200 -1 1 1 1 1 1 1 -1 -1
2 10 0 600 20 -1 -1 20 1200 524288 1 1 1 1 2 1 -1 -1
3 20 0 600  6 -1 -1  6 1200 524288 1 1 1 1 2 1 -1 -1
"""


def test_swf_jobs_split_by_cores_per_node_keep_memory_per_processor(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "g.swf", GANG_SWF), TraceOptions(cores_per_node=12))
    jobs = list(trace)
    # 48 processors: 4 nodes of 12; 20: 2 nodes of 10 (spread evenly); 6: one node
    assert [(j.nodes, j.shape.cores) for j in jobs] == [(4, 12), (2, 10), (1, 6)]
    assert [j.shape.memory for j in jobs] == [12 * GiB, 10 * 512 * 1024 * KB, 6 * GiB // 2]
    assert trace.nodes is not None and trace.nodes.tolist() == [4, 2, 1]
    assert "cores per node" not in {d.field for d in trace.defaults}  # given, not a default


def test_swf_cores_per_node_from_the_header_rounded_and_reported_once(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "g.swf", GANG_SWF))
    # MaxProcs 100 / MaxNodes 8 = 12.5, rounded half up: 13 cores per node
    assert [(j.nodes, j.shape.cores) for j in trace] == [(4, 12), (2, 10), (1, 6)]
    [used] = [d for d in trace.defaults if d.field == "cores per node"]
    assert (used.default, used.lines) == ("13 (header MaxProcs 100 / MaxNodes 8, rounded)", 3)
    no_header = "\n".join(GANG_SWF.splitlines()[2:]) + "\n"
    plain = read_trace(write(tmp_path, "plain.swf", no_header))
    assert plain.nodes is None  # no MaxNodes, no option: every job on one node, as before
    assert [j.shape.cores for j in plain] == [48, 20, 6]


def test_swf_preemptible_queues(tmp_path: Path) -> None:
    options = TraceOptions(preemptible_queues=frozenset({2}))
    trace = read_trace(write(tmp_path, "g.swf", GANG_SWF), options)
    assert [j.shape.preemptible for j in trace] == [False, True, True]
    [used] = [d for d in trace.defaults if d.field == "preemptible"]
    assert used.default == "True in queues 2 (field 15), else False"


def test_csv_nodes_column(tmp_path: Path) -> None:
    text = "submit,cores,memory,run_time,nodes\n0,12,40GiB,1h,4\n5,1,1GiB,1h,\n"
    trace = read_trace(write(tmp_path, "g.csv", text))
    assert [(j.nodes, j.shape.cores, j.shape.memory) for j in trace] == [
        (4, 12, 40 * GiB),
        (1, 1, GiB),
    ]
    for bad in ("0", "2.5", "many"):
        with pytest.raises(TraceError) as info:
            read_trace(
                write(tmp_path, "bad.csv", f"submit,cores,memory,run_time,nodes\n0,1,1,1,{bad}\n")
            )
        assert (info.value.line, info.value.field) == (2, "nodes")


def test_swf_numeric_header_with_a_note_after_the_number(tmp_path: Path) -> None:
    """The PWA's CTC-SP2 log says ``MaxNodes: 338 (batch partition; 512 total)``: the number
    is read (the note dropped); a value that does not start with one is still bad."""
    jobs = "\n".join(GANG_SWF.splitlines()[2:]) + "\n"
    text = "; MaxProcs: 338\n; MaxNodes: 338 (batch partition; 512 total)\n" + jobs
    trace = read_trace(write(tmp_path, "ctc.swf", text))
    assert trace.header["MaxNodes"] == 338
    assert [(j.nodes, j.shape.cores) for j in trace] == [(48, 1), (20, 1), (6, 1)]
    with pytest.raises(TraceError, match="header MaxNodes"):
        read_trace(write(tmp_path, "bad.swf", "; MaxNodes: (338)\n" + jobs))
