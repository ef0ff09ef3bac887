"""W&B never takes a run down, agrees with the run folder on how the run ended, and resumes
count what earlier processes already sent."""

import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import psutil
import pytest

import cl
from cl import wandb_sink
from cl.wandb_sink import BLOCK, HEADER, rows_held

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
WANDB = Path(sys.executable).parent / "wandb"
SMALL = [
    "run.progress=false",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
]


def inspect_summary(folder: Path) -> dict:
    (segment,) = (folder / "wandb").glob("offline-run-*")
    r = subprocess.run(
        [str(WANDB), "leet", "inspect", "--summary", "--json", str(segment)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_killing_wandb_core_mid_run_loses_nothing(tmp_path):
    folder = tmp_path / "run"
    cmd = [sys.executable, "-m", "cl", "run", "-q", *SMALL, "train.epochs=20"]
    cmd += [f"run.dir={tmp_path}", "run.name=run", "wandb.mode=offline"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own wandb-core
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        metrics, deadline = folder / "metrics.jsonl", time.time() + 300
        while not metrics.exists() or metrics.read_bytes().count(b"\n") < 50:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        core = [c for c in psutil.Process(proc.pid).children(recursive=True) if "wandb" in c.name()]
        assert core, "no wandb-core process"
        for c in core:
            c.kill()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count("warning: W&B failed") == 1 and "Traceback" not in err, err
    run = cl.load_run(folder)
    assert run.summary["status"] == "finished"
    assert len(run.metrics) == run.summary["n_eval_rows"] == run.summary["n_iterations"] + 1
    assert (folder / "plots" / "accuracy_curves.png").is_file()


@pytest.mark.parametrize("signal_name, code", [("INT2", 130), ("TERM", 143)])
def test_wandb_and_the_run_folder_agree_on_an_interrupted_run(tmp_path, signal_name, code):
    """A double Ctrl-C used to leave W&B 'finished, exit 0' and summary.json 'failed'."""
    job = {
        "signal": signal_name,
        "at": 20,
        "args": ["-q", *SMALL, f"run.dir={tmp_path}", "run.name=run", "wandb.mode=offline"],
        "stderr": str(tmp_path / "err"),
    }
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    r = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(r.stdout) == [code], (tmp_path / "err").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    w = inspect_summary(tmp_path / "run")
    assert summary["status"] == w["summary"]["status"] == "interrupted"
    assert w["exit_code"] == code and w["state"] != "finished"


def test_rows_held_reads_the_last_row_of_each_process(tmp_path):
    """The .wandb file's tail is enough, over 32 KiB blocks and a torn end."""
    args = [*SMALL, "train.epochs=3", f"run.dir={tmp_path}", "run.name=run"]
    run = cl.run([*args, "wandb.mode=offline"], quiet=True)
    (segment,) = (run.path / "wandb").glob("offline-run-*")
    run_id = segment.name.rsplit("-", 1)[1]
    (file,) = segment.glob("*.wandb")
    assert file.stat().st_size > 4 * 32768
    assert rows_held(run.path / "wandb", run_id) == len(run.metrics)
    assert rows_held(run.path / "wandb", "otherid") == 0
    data = file.read_bytes()
    counts = []
    for cut in (len(data) - 5, len(data) * 3 // 4, len(data) // 2, 40_000, 100):
        file.write_bytes(data[:cut])
        counts.append(rows_held(run.path / "wandb", run_id))
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    assert 0 < counts[2] < len(run.metrics)
    os.remove(file)


# --- the tail reader on files built at every awkward layout ------------------------------

RUN_ID = "abcd1234"


def history(step: int, row: bool = True, pad: int = 0) -> bytes:
    """A W&B history record of step `step`: a row (with `experience`) or another series;
    `pad` bytes of extra value make it longer (over several blocks when large)."""
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    record.history.step.num = step
    item = record.history.item.add()
    item.key, item.value_json = ("experience" if row else "media"), "1"
    if pad:
        extra = record.history.item.add()
        extra.key, extra.value_json = "pad", '"' + "x" * pad + '"'
    return record.SerializeToString()


def other(size: int) -> bytes:
    """A non-history record (a summary update) of about `size` bytes."""
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    item = record.summary.update.add()
    item.key, item.value_json = "s", '"' + "y" * size + '"'
    return record.SerializeToString()


def frame(records: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """The records framed as W&B (LevelDB's log format) frames them, after the 7-byte file
    header: 32 KiB blocks, a block's last < 7 bytes zero-filled, records cut into first/middle/
    last fragments. Also each record's (start, end) byte span."""
    out, spans = bytearray(b":W&B\x00\x00\x01"), []
    for payload in records:
        begin, first = len(out), True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < HEADER.size:
                out += bytes(left)
                continue
            piece, payload = payload[: left - HEADER.size], payload[left - HEADER.size :]
            kind = (1 if not payload else 2) if first else (4 if not payload else 3)
            crc = zlib.crc32(piece, zlib.crc32(bytes([kind])))
            out += struct.pack("<IHB", crc, len(piece), kind) + piece
            first = False
            if not payload:
                break
        spans.append((begin, len(out)))
    return bytes(out), spans


def write_run_file(tmp_path, data: bytes):
    folder = tmp_path / "wandb" / f"offline-run-20260101_000000-{RUN_ID}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"run-{RUN_ID}.wandb").write_bytes(data)
    return folder / f"run-{RUN_ID}.wandb"


def layouts():
    """(label, records, rows): the last row's record put at every awkward place."""
    rows = [history(i) for i in range(40)]
    row_size = len(rows[-1]) + HEADER.size
    out = []
    # a filler before the last row, sized so the row's header lands 0..row_size+8 bytes before
    # the end of block 2: split over blocks 1|2, exactly at the end, padding of 1-6 bytes, a
    # zero-length first fragment (7 bytes left), or wholly inside the block.
    before, _ = frame(rows[:-1])
    reached = set()
    for size in range(2 * BLOCK - len(before) - row_size - 80, 2 * BLOCK - len(before)):
        records = [*rows[:-1], other(size), rows[-1]]
        begin = frame(records)[1][-1][0]
        left = BLOCK - begin % BLOCK if begin < 2 * BLOCK else 0
        if left <= row_size + 8 and left not in reached:
            reached.add(left)
            out.append((f"left={left}", records, 40))
    # a row longer than a block (first, middle, last fragments), then a small tail
    out.append(("row-over-3-blocks", [*rows[:-1], history(39, pad=70_000), other(10)], 40))
    # non-row records after the last row: more than two blocks of them, and a non-row
    # history record (W&B's media step) behind them
    out.append(("tail-of-other-records", [*rows, *[other(9000)] * 8, history(40, row=False)], 40))
    # many rows, the last one split over a block boundary deep in the file
    many = [history(i, pad=300) for i in range(600)]
    out.append(("long-run", many, 600))
    return out


@pytest.mark.parametrize("label, records, rows", layouts(), ids=[x[0] for x in layouts()])
def test_tail_reader_finds_the_last_row_at_every_layout(tmp_path, label, records, rows):
    data, spans = frame(records)
    write_run_file(tmp_path, data)
    assert rows_held(tmp_path / "wandb", RUN_ID) == rows


def test_the_layouts_reach_every_awkward_place():
    """The last row follows 1-6 bytes of block padding, starts with an empty first fragment
    (7 bytes left), is split over two blocks, ends exactly at a block's end, starts exactly at
    a block's start, lies within one block, spans three blocks."""
    seen = set()
    for _, records, _ in layouts():
        data, spans = frame(records)
        begin, end = spans[[i for i, r in enumerate(records) if _is_row(r)][-1]]
        left, size = BLOCK - begin % BLOCK, end - begin
        seen.add("padded" if left < HEADER.size else "empty-first" if left == HEADER.size else "")
        seen.add("split" if HEADER.size < left < size else "within" if left > size else "")
        seen.add("ends-at-boundary" if end % BLOCK == 0 else "")
        seen.add("at-block-start" if begin % BLOCK == 0 else "")
        seen.add("three-blocks" if (end - 1) // BLOCK - begin // BLOCK == 2 else "")
    wanted = {"padded", "empty-first", "split", "within", "ends-at-boundary", "at-block-start"}
    assert seen >= wanted | {"three-blocks"}


def _is_row(payload: bytes) -> bool:
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    record.ParseFromString(payload)
    return record.WhichOneof("record_type") == "history" and any(
        i.key == "experience" for i in record.history.item
    )


def test_a_torn_end_counts_only_whole_rows(tmp_path):
    """Cut anywhere inside the last row's record (also inside a fragment header, or past a
    first fragment in the previous block): the row before it is the last one held."""
    rows = [history(i, pad=40) for i in range(400)]
    before, _ = frame(rows[:-1])
    filler = other(BLOCK - len(before) % BLOCK + BLOCK - 40 - 20)  # the row starts 40 bytes
    data, spans = frame([*rows[:-1], filler, rows[-1]])  # before a block boundary
    begin, end = spans[-1]
    assert begin // BLOCK != (end - 1) // BLOCK
    for cut in [*range(begin, begin + 20), *range(end - 20, end), (begin + end) // 2]:
        write_run_file(tmp_path, data[:cut])
        assert rows_held(tmp_path / "wandb", RUN_ID) == 399, cut
    write_run_file(tmp_path, data)
    assert rows_held(tmp_path / "wandb", RUN_ID) == 400


def test_rows_held_waits_until_w_and_b_has_written_its_file(tmp_path):
    """W&B's service may still write a run's last blocks after `finish()` returns (or after
    the logging process died): the reader waits until no process holds the file open."""
    data, spans = frame([history(i) for i in range(50)])
    path = write_run_file(tmp_path, data[: spans[20][1]])  # 21 rows so far
    writer = open(path, "ab")  # noqa: SIM115 - held open like W&B's service does
    counted = []
    reader = threading.Thread(target=lambda: counted.append(rows_held(tmp_path / "wandb", RUN_ID)))
    reader.start()
    reader.join(timeout=1)  # a reader that does not wait would finish here, with 21
    writer.write(data[spans[20][1] :])
    writer.close()
    reader.join()
    assert counted == [50]


def test_a_writer_that_never_closes_is_waited_for_a_bounded_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wandb_sink, "WRITER_WAIT", 0.2)
    data, spans = frame([history(i) for i in range(30)])
    path = write_run_file(tmp_path, data[: spans[9][1]])
    with open(path, "ab"):
        assert rows_held(tmp_path / "wandb", RUN_ID) == 10
    assert "still writes" in capsys.readouterr().err
