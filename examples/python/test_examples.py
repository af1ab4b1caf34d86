"""Runs each example as a user would (its own interpreter, in a fresh directory) and checks
what it printed and stored."""

import json
import os
import sqlite3
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(tmp_path, name, *args):
    return subprocess.run([sys.executable, os.path.join(HERE, name), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def statuses(db, run_id=None):
    with sqlite3.connect(db) as conn:
        where = "WHERE recovery = (SELECT MAX(recovery) FROM tasks)"
        return dict(conn.execute("SELECT step, status FROM tasks " + where).fetchall())


def test_simple_runs_its_chain_in_order(tmp_path):
    done = run(tmp_path, "simple.py")
    assert done.returncode == 0, done.stderr
    lines = [l for l in done.stderr.splitlines() if "Attempting to run" in l or "doing what" in l]
    assert [l.split("][ ")[2].split(" ]")[0].strip() for l in lines] == [
        "[ Task s1/1", "doing what prog1 is doing",
        "[ Task s2/1", "doing what prog2 is doing",
        "[ Task s3/1", "doing what prog3 is doing"]
    assert "Processing finished with: success" in done.stderr
    assert statuses(tmp_path / "simple.run.db") == {"s1": "success", "s2": "success", "s3": "success"}


def test_recovery_fails_then_recovers_skipping_s1(tmp_path):
    first = run(tmp_path, "recovery.py", "restart", "bad")
    assert first.returncode == 1 and "prog2 got bad input" in first.stderr
    assert "Processing finished with: failure" in first.stderr
    second = run(tmp_path, "recovery.py", "recover", "good")
    assert second.returncode == 0, second.stderr
    assert "[ Task s1/1 ]" not in second.stderr and "[ Task s3/1 ] Completed, status: success" in second.stderr
    assert statuses(tmp_path / "recovery.run.db") == {"s1": "skipped", "s2": "success", "s3": "success"}


def test_resources_run_two_at_a_time(tmp_path):
    done = run(tmp_path, "resources.py")
    assert done.returncode == 0, done.stderr
    assert sorted(l.split()[0] for l in done.stdout.splitlines()) == ["prog1", "prog2", "prog3", "prog4"]
    with sqlite3.connect(tmp_path / "resources.run.db") as conn:
        spans = [json.loads(r) for (r,) in conn.execute("SELECT result FROM tasks")]
    starts = sorted(s for s, _ in spans)
    # Two at once: the third starts only after one of the first two ended.
    assert starts[2] >= min(e for s, e in spans if s <= starts[1])


def test_delays_run_what_is_due_at_each_invocation(tmp_path):
    import time
    first = run(tmp_path, "delays.py")
    assert first.returncode == 3 and "outcome: incomplete" in first.stdout, first.stderr
    assert statuses(tmp_path / "delays.run.db") == {"s1": "success"}
    early = run(tmp_path, "delays.py", "continue")
    assert early.returncode == 3 and statuses(tmp_path / "delays.run.db") == {"s1": "success"}
    time.sleep(1.1)
    second = run(tmp_path, "delays.py", "continue")
    assert second.returncode == 3, second.stderr
    assert statuses(tmp_path / "delays.run.db") == {"s1": "success", "s2": "success"}
    time.sleep(1.1)
    last = run(tmp_path, "delays.py", "continue")
    assert last.returncode == 0 and "outcome: success" in last.stdout, last.stderr
    assert statuses(tmp_path / "delays.run.db") == {"s1": "success", "s2": "success", "s3": "success"}
