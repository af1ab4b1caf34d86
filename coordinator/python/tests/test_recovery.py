"""Recovery and continue across two interpreter processes, as the original's users run them."""

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import os, sys
    import eventor as evr

    store, mode, construct, count = sys.argv[1:5]
    bad = os.environ.get("BAD_INPUT") == "1"

    def s1():
        with open(count, "a") as f:
            f.write("s1\\n")
        return "one"

    def s2():
        if bad:
            raise ValueError("bad input")
        return "two"

    ev = evr.Eventor(name="recover", store=store, run_id="r1",
                     run_mode={"restart": evr.RUN_RESTART, "recover": evr.RUN_RECOVER}[mode],
                     config={"task_construct": construct})
    e1, e2, e3 = ev.add_event("e1"), ev.add_event("e2"), ev.add_event("e3")
    ev.add_assoc(e1, ev.add_step("s1", func=s1, triggers={evr.STEP_SUCCESS: (e2,)}))
    ev.add_assoc(e2, ev.add_step("s2", func=s2, triggers={evr.STEP_SUCCESS: (e3,)}))
    ev.add_assoc(e3, ev.add_step("s3", func="true"))
    ev.trigger_event(e1, 1)
    ok = ev.run()
    ev.close()
    print("outcome", ev.outcome)
    sys.exit(0 if ok else 1)
""")


def run(tmp_path, mode, construct, bad):
    program = tmp_path / "recover_prog.py"
    program.write_text(PROGRAM)
    env = dict(__import__("os").environ, BAD_INPUT="1" if bad else "0")
    return subprocess.run([sys.executable, str(program), str(tmp_path / "r.db"), mode, construct,
                           str(tmp_path / "count.txt")], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("construct", ["invoke", "process"])
def test_recover_skips_what_succeeded_and_reruns_the_failure(tmp_path, construct):
    first = run(tmp_path, "restart", construct, bad=True)
    assert first.returncode == 1 and "outcome failure" in first.stdout, first.stderr
    second = run(tmp_path, "recover", construct, bad=False)
    assert second.returncode == 0 and "outcome success" in second.stdout, second.stderr
    assert (tmp_path / "count.txt").read_text() == "s1\n"
    from conftest import tasks
    latest = tasks(str(tmp_path / "r.db"), "r1")
    assert {k: v[0] for k, v in latest.items()} == {
        ("s1", "1"): "skipped", ("s2", "1"): "success", ("s3", "1"): "success"}


INTERRUPTED = textwrap.dedent("""
    import sys
    import eventor as evr

    ev = evr.Eventor(name="ctrlc", store=sys.argv[1], run_id="c1")
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("long", func="sleep 30"))
    ev.trigger_event(start, 1)
    print("running", flush=True)
    try:
        ev.run()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_stops_the_run_and_raises_keyboard_interrupt(tmp_path):
    import signal
    import time
    program = tmp_path / "ctrlc.py"
    program.write_text(INTERRUPTED)
    store = str(tmp_path / "c.db")
    child = subprocess.Popen([sys.executable, str(program), store], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "running\n"
    time.sleep(1.0)
    began = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert "interrupted" in out and time.monotonic() - began < 10
    from conftest import tasks
    status, _, error = tasks(store, "c1")[("long", "1")]
    assert status == "failure" and "SIGINT" in error


ORPHAN = textwrap.dedent("""
    import os, sys, time
    import eventor as evr

    def long(pidfile):
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    ev = evr.Eventor(name="orphan", store=sys.argv[1])
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("long", func=long, args=(sys.argv[2],)))
    ev.trigger_event(start, 1)
    ev.run()
""")


def test_a_forked_step_dies_with_its_program(tmp_path):
    import os
    import signal
    import time
    program = tmp_path / "orphan.py"
    program.write_text(ORPHAN)
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, str(program), str(tmp_path / "o.db"), str(pidfile)])
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the step's child %d outlived its program" % child)


BUFFERED = textwrap.dedent("""
    import sys
    import eventor as evr

    print("before the run")  # buffered: stdout is a pipe
    ev = evr.Eventor(name="buffered", store=sys.argv[1])
    start = ev.add_event("start")
    ev.add_assoc(start, *[ev.add_step("s%d" % i, func=print, args=("step %d" % i,)) for i in range(3)])
    ev.trigger_event(start, 1)
    ev.run()
""")


def test_what_the_program_printed_before_a_forked_step_is_printed_once(tmp_path):
    program = tmp_path / "buffered.py"
    program.write_text(BUFFERED)
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, str(program), str(tmp_path / "b.db")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("before the run") == 1
    assert sorted(done.stdout.split("\n")[1:4]) == ["step 0", "step 1", "step 2"]
