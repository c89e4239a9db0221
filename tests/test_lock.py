"""One writer per run: the lock file is created whole and a dead holder's lock is taken over without ever
removing a live one, under threads and processes racing with every window of the protocol made wide;
evaluation, compaction and the nightly exclude each other through it."""

import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aosa.engine.errors import ConfigError
from aosa.engine.store import compaction, lock
from aosa.engine.store.compaction import compact_run
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.writer import RunWriter
from aosa.jobs import evaluate as evaluate_job
from aosa.jobs.cli import main as aosa
from tests.lock_race import RUN_ID, STEPS, slowed
from tests.test_store import unit

ROOT = Path(__file__).resolve().parent.parent


def dead_holder(host: str = platform.node()) -> bytes:
    """The contents of a lock whose process has exited."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return json.dumps({"host": host, "pid": int(gone.stdout), "since": "2026-01-01T00:00:00"}).encode()


def stale_lock(root: Path, run_id: str = RUN_ID) -> Path:
    """Leave a dead process's lock on `run_id`; returns its path."""
    path = RunWriter(root, run_id).lock.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dead_holder())
    return path


def attempt(root: Path, outcome: dict[str, str], hold: threading.Event | None = None) -> None:
    """Try to hold run `race`: outcome[thread name] says `held` or the refusal; a holder waits for `hold`."""
    name = threading.current_thread().name
    try:
        with RunWriter(root, RUN_ID):
            outcome[name] = "held"
            if hold is not None:
                hold.wait(30)
    except ConfigError as exc:
        outcome[name] = str(exc)


def test_one_writer_per_run_and_a_dead_holders_lock_is_taken_over(tmp_path):
    with RunWriter(tmp_path, "r") as held:
        assert json.loads(held.lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError, match=f"run 'r' is being written by pid {os.getpid()} on "):
            RunWriter(tmp_path, "r").__enter__()
        with RunWriter(tmp_path, "other run"):  # other runs are free
            pass
    assert not held.lock.path.exists()  # released
    held.lock.path.write_bytes(dead_holder())
    with RunWriter(tmp_path, "r"):  # its process has exited: taken over
        assert json.loads(held.lock.path.read_text())["pid"] == os.getpid()
    held.lock.path.write_bytes(dead_holder(host="elsewhere"))
    with pytest.raises(ConfigError, match=f"on elsewhere .* delete {held.lock.path}"):
        RunWriter(tmp_path, "r").__enter__()


@pytest.mark.parametrize("contents", [b"", b'{"host": "h", "pi', b"[1, 2]"])
def test_an_unreadable_lock_is_refused_not_taken_over(tmp_path, contents):
    path = stale_lock(tmp_path)
    path.write_bytes(contents)
    with pytest.raises(ConfigError, match=f"unreadable lock file {path}; delete it"):
        RunWriter(tmp_path, RUN_ID).__enter__()
    assert path.read_bytes() == contents


def test_a_lock_is_linked_into_place_whole(tmp_path, monkeypatch):
    """The lock's name appears only with its holder written: what `os.link` publishes is a complete file."""
    published, link = [], os.link
    monkeypatch.setattr(lock.os, "link", lambda source, target: (published.append(Path(source).read_bytes()),
                                                                  link(source, target))[1])
    with RunWriter(tmp_path, RUN_ID) as writer:
        assert published == [writer.lock.content] and json.loads(published[0])["pid"] == os.getpid()


def test_a_taker_that_judged_the_lock_dead_late_never_removes_the_new_holders(tmp_path, monkeypatch):
    """A reads the dead holder's lock and stalls; B takes it over and holds; A then finds B alive and is refused.
    (Unlinking what A judged dead would have deleted B's fresh lock: both would write.)"""
    stale_lock(tmp_path)
    stalled, b_holds, read = threading.Event(), threading.Event(), lock.read

    def stalling(path: Path) -> bytes | None:
        found = read(path)
        if threading.current_thread().name == "A" and not stalled.is_set():
            stalled.set()
            b_holds.wait(30)
        return found

    monkeypatch.setattr(lock, "read", stalling)
    outcome: dict[str, str] = {}
    a = threading.Thread(target=attempt, args=(tmp_path, outcome), name="A")
    a.start()
    assert stalled.wait(30)
    with RunWriter(tmp_path, RUN_ID) as b:
        b_holds.set()
        a.join(30)
        assert b.lock.path.read_bytes() == b.lock.content  # B's lock is where it was
    assert outcome["A"].startswith(f"run {RUN_ID!r} is being written by pid {os.getpid()}")
    assert list((tmp_path / lock.LOCKS).iterdir()) == []


def test_a_dead_claimers_claim_is_taken_over(tmp_path):
    path = stale_lock(tmp_path)
    lock.claim_path(path, path.read_bytes()).write_bytes(dead_holder())  # a taker died holding the claim
    with RunWriter(tmp_path, RUN_ID) as writer:
        assert [entry.name for entry in path.parent.iterdir()] == [path.name]
        assert path.read_bytes() == writer.lock.content
    assert list(path.parent.iterdir()) == []


def test_threads_racing_on_a_stale_lock_with_every_window_wide_leave_one_holder(tmp_path, monkeypatch):
    rng = random.Random(0)
    for name in STEPS:
        monkeypatch.setattr(lock, name, slowed(getattr(lock, name), rng))
    for _ in range(4):
        stale_lock(tmp_path)
        outcome: dict[str, str] = {}
        hold = threading.Event()
        threads = [threading.Thread(target=attempt, args=(tmp_path, outcome, hold), name=str(i)) for i in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(outcome) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        hold.set()
        for thread in threads:
            thread.join(30)
        held = [name for name, result in outcome.items() if result == "held"]
        assert len(held) == 1 and len(outcome) == 8, outcome
        assert all("is being written by pid" in result for result in outcome.values() if result != "held")
        assert list((tmp_path / lock.LOCKS).iterdir()) == []  # released; no temp file or claim left


def contenders(results: Path, count: int, *evaluate: str) -> list[subprocess.CompletedProcess]:
    """`count` processes of tests/lock_race.py started at once (all ready, then told to go) on a stale lock."""
    stale_lock(results / "store")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-m", "tests.lock_race", str(results), str(index), str(count),
                                   *evaluate], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for index in range(count)]
    deadline = time.monotonic() + 300
    while len(list(results.glob("*.ready"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    (results / "go").touch()
    return [subprocess.CompletedProcess(process.args, process.wait(600), *process.communicate())
            for process in processes]


def test_eight_processes_started_at_once_on_a_stale_lock_leave_one_holder(tmp_path):
    done = contenders(tmp_path, 8)
    assert [process.returncode for process in done] == [0] * 8, [process.stderr for process in done]
    assert len(list(tmp_path.glob("*.held"))) == 1 and len(list(tmp_path.glob("*.refused"))) == 7
    for refusal in tmp_path.glob("*.refused"):
        assert refusal.read_text().startswith(f"run {RUN_ID!r} is being written by pid")
    assert list((tmp_path / "store" / lock.LOCKS).iterdir()) == []


def test_evaluate_on_a_held_run_id_is_refused_in_seconds_before_ray_starts(tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path\nv,v.mp4\n")
    connected = []
    monkeypatch.setattr(evaluate_job, "connect", lambda *args: connected.append(args))
    with RunWriter(tmp_path / "store", "busy"):
        began = time.monotonic()
        code = evaluate_job.main(["--manifest", str(manifest), "--model", "probe3d", "--store",
                                  str(tmp_path / "store"), "--run-id", "busy"])
    assert code == 2 and time.monotonic() - began < 10 and connected == []  # refused before joining Ray
    assert "run 'busy' is being written by pid" in capsys.readouterr().err


def test_compaction_and_evaluation_exclude_each_other(tmp_path, capsys, monkeypatch):
    for video in "ab":
        unit(tmp_path, "r", video)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path\nv,v.mp4\n")
    monkeypatch.setattr(evaluate_job, "connect", lambda *args: pytest.fail("evaluated during a compaction"))
    codes, merge = [], compaction.merge

    def evaluating_meanwhile(*args):
        codes.append(evaluate_job.main(["--manifest", str(manifest), "--model", "probe3d", "--store", str(tmp_path),
                                        "--run-id", "r"]))
        return merge(*args)

    monkeypatch.setattr(compaction, "merge", evaluating_meanwhile)
    assert compact_run(tmp_path, "r").after["metrics"] == 1 and codes and set(codes) == {2}
    assert "run 'r' is being written by pid" in capsys.readouterr().err
    with RunWriter(tmp_path, "r"):
        assert aosa(["compact", "--store", str(tmp_path), "--run-id", "r"]) == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_evaluate_processes_started_at_once_on_a_stale_lock_store_every_unit_once(tmp_path):
    from tests.videos import moving_square, write_video

    manifest = tmp_path / "manifest.csv"
    rows = [f"v{i},{write_video(tmp_path / f'v{i}.mp4', moving_square(18, 96, 128, step=2 + i))}" for i in range(2)]
    manifest.write_text("video_id,path\n" + "\n".join(rows) + "\n")
    done = contenders(tmp_path, 4, "--manifest", str(manifest), "--model", "probe3d", "--methods",
                      "aosa-approx,random", "--stride", "32", "--model-actors", "1")
    codes = sorted(process.returncode for process in done)
    assert codes == [0, 2, 2, 2], [process.stderr[-2000:] for process in done]
    assert all(f"run {RUN_ID!r} is being written by pid" in process.stderr for process in done if process.returncode)
    stored = StoreReader(tmp_path / "store")
    with stored.connect(RUN_ID) as con:
        keys = con.sql("SELECT video_id, method FROM metrics WHERE status = 'ok'").fetchall()
    assert len(keys) == len(set(keys)) == 4 and stored.stored_units(RUN_ID) == {
        (f"v{i}", "probe3d", method) for i in range(2) for method in ("aosa-approx", "random")}
    assert list((tmp_path / "store" / lock.LOCKS).iterdir()) == []
