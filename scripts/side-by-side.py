#!/usr/bin/env python3
"""Runs each of the original's examples ported to examples/python/original/ on ours and on the
original Eventor 5.1.9, each in a fresh directory with its own interpreter, and compares them
task by task (step, sequence, recovery: final status), and the run's outcome (each run()'s
answer, the exit code). Prints a markdown table: example | tasks compared | agree |
differences.

Usage: scripts/side-by-side.py OURS_PYTHON [ORIGINAL_PYTHON] [--only NAME ...]
  OURS_PYTHON: a venv's python with our package (scripts/python-test.sh makes
  target/python-venv); ORIGINAL_PYTHON: the original's venv (/work/shared/original), skipped
  (ours alone is run and listed) when it is missing.
"""

import argparse
import glob
import json
import os
import signal
import sqlite3
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples", "python", "original")
TIMEOUT = 60


def examples(only):
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "runly*.py")) + glob.glob(os.path.join(EXAMPLES, "example*.py")))
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [n for n in names if not only or n in only]


def tasks_in(db):
    """{(step, sequence, recovery): status} from one store, whichever's it is (the original's
    table Task, ours tasks); the latest row wins."""
    try:
        with sqlite3.connect("file:%s?mode=ro" % db, uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "Task" in tables:
                rows = conn.execute("SELECT step_id, sequence, recovery, status FROM Task ORDER BY id_")
            elif "tasks" in tables:
                rows = conn.execute("SELECT step, sequence, recovery, status FROM tasks ORDER BY id")
            else:
                return {}
            # The original runs a delay as a task of a hidden step of its own (_evr_delay_...).
            return {(s, str(q), int(r)): st for s, q, r, st in rows if not s.startswith("_evr_")}
    except sqlite3.DatabaseError:  # not a store
        return {}


def run_one(python, name):
    """What one example did on one implementation: its tasks, its run()s' answers, its exit
    code (None: timed out)."""
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as cwd:
        script = os.path.join(EXAMPLES, name + ".py")
        # Its own process group: a hung run's children are stopped with it.
        child = subprocess.Popen([python, script], cwd=cwd, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                                 start_new_session=True)
        try:
            out, _ = child.communicate(timeout=TIMEOUT)
            code = child.returncode
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            out, code = child.communicate()[0], None
        results = None
        for line in out.splitlines():
            if line.startswith("results: "):
                results = json.loads(line[len("results: "):])
        tasks = {}
        for path in glob.glob(os.path.join(cwd, "*")):
            if os.path.isfile(path) and not path.endswith((".txt", ".log")):
                tasks.update(tasks_in(path))
        return {"tasks": tasks, "results": results, "code": code}


def show_task(key):
    step, sequence, recovery = key
    return "%s/%s r%d" % (step, sequence, recovery)


def show_end(run):
    if run["code"] is None:
        return "timed out after %d s" % TIMEOUT
    return "runs %s, exit %d" % (run["results"], run["code"])


def compare(original, ours):
    """(tasks compared, differences as text)."""
    keys = sorted(set(original["tasks"]) | set(ours["tasks"]))
    differences = []
    for key in keys:
        a, b = original["tasks"].get(key, "none"), ours["tasks"].get(key, "none")
        if a != b:
            differences.append("%s: original %s, ours %s" % (show_task(key), a, b))
    if (original["results"], original["code"]) != (ours["results"], ours["code"]):
        differences.append("outcome: original %s; ours %s" % (show_end(original), show_end(ours)))
    return len(keys), differences


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ours")
    parser.add_argument("original", nargs="?")
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    # Each example runs in a directory of its own: the interpreters' paths must not be relative.
    args.ours = os.path.abspath(args.ours)
    args.original = args.original and os.path.abspath(args.original)
    have_original = bool(args.original) and os.access(args.original, os.X_OK)
    if not have_original:
        why = "%s is missing" % args.original if args.original else "was not given"
        print("(the original's python %s: ours alone)\n" % why)
    print("| example | tasks compared | agree | differences |")
    print("|---|---|---|---|")
    agreeing = total = 0
    for name in examples(args.only):
        ours = run_one(args.ours, name)
        total += 1
        if not have_original:
            statuses = ", ".join("%s %s" % (show_task(k), v) for k, v in sorted(ours["tasks"].items()))
            print("| %s | %d | - | ours only: %s; %s |" % (name, len(ours["tasks"]), statuses, show_end(ours)))
            continue
        original = run_one(args.original, name)
        count, differences = compare(original, ours)
        agreeing += not differences
        print("| %s | %d | %s | %s |" % (name, count, "yes" if not differences else "no",
                                         "; ".join(differences) or "- (both: %s)" % show_end(ours)), flush=True)
    if have_original:
        print("\n%d of %d examples agree fully." % (agreeing, total))


if __name__ == "__main__":
    main()
