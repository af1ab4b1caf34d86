"""Shared helpers: a fresh store per test and the stored tasks read back.

The store is read by another process: the engine's SQLite (bundled) and Python's `sqlite3`
are two copies of SQLite in one process, and POSIX file locks belong to the process, so
`sqlite3` closing the store's file would drop the engine's locks on it.
"""

import json
import subprocess
import sys

import pytest

READ_TASKS = """
import json, sqlite3, sys
store, run_id = sys.argv[1:3]
db = sqlite3.connect(store)
rows = db.execute(
    "SELECT step, sequence, status, result, error FROM tasks WHERE run_id = ? "
    "AND recovery = (SELECT MAX(recovery) FROM tasks WHERE run_id = ?)",
    (run_id, run_id)).fetchall()
print(json.dumps(rows))
"""


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "flow.run.db")


def query(store, sql):
    """The rows of ``sql`` on ``store``, read by another process."""
    program = "import json, sqlite3, sys; print(json.dumps(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall()))"
    out = subprocess.run([sys.executable, "-c", program, store, sql], capture_output=True,
                         text=True, check=True).stdout
    return [tuple(row) for row in json.loads(out)]


def tasks(store, run_id):
    """``{(step, sequence): (status, result, error)}`` of a run's latest recovery."""
    out = subprocess.run([sys.executable, "-c", READ_TASKS, store, run_id], capture_output=True,
                         text=True, check=True).stdout
    return {(step, seq): (status, result, error) for step, seq, status, result, error in json.loads(out)}
