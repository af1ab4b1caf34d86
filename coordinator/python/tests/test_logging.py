"""A step's logging: the task lines and the records a step emits with Python's `logging`
go to the console and into the run's central log (logs/FLOW/RUN.log) with the step and
sequence, in a program that configured no logging itself."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = """
import json, logging, sys
import eventor as evr

def step(n):
    logging.getLogger("mine").info("hello %d from the step", n)
    logging.getLogger("mine").debug("below the level")
    return n

logdir, construct = sys.argv[1:3]
ev = evr.Eventor(name="logs", store=logdir + "/logs.run.db",
                 config={"logdir": logdir, "task_construct": construct})
start = ev.add_event("start")
ev.add_assoc(start, ev.add_step("s1", func=step, args=(7,)))
ev.trigger_event(start, 1)
print(json.dumps([ev.run(), ev.run_id]))
"""


@pytest.mark.parametrize("construct", ["invoke", "thread", "process"])
def test_a_steps_logging_reaches_the_console_and_the_central_log_with_its_task(tmp_path, construct):
    logdir = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PROGRAM), logdir, construct],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ok, run_id = json.loads(done.stdout.strip().splitlines()[-1])
    assert ok
    for line in ("[ Task s1/1 ] Attempting to run", "hello 7 from the step",
                 "Processing finished with: success"):
        assert line in done.stderr, "INFO lines on the console: %s" % done.stderr
    with open(os.path.join(logdir, "logs", run_id + ".log")) as log:
        records = [line.split(" ", 4) for line in log.read().splitlines()
                   if not line.startswith("-- ")]
    texts = {text for _, _, task, stream, text in records if (task, stream) == ("s1[1]", "agent")}
    assert "INFO mine: hello 7 from the step" in texts, records
    assert any("[ Task s1/1 ] Attempting to run" in t for t in texts), records
    assert any("[ Task s1/1 ] Completed, status: success" in t for t in texts), records
    assert not any("below the level" in t for t in texts)
