"""The original README's delays example: s1, then s2 one second after s1 succeeded, then s3
one second after s2. Meant to be invoked again and again (from cron), each invocation one
loop (`max_loops=1`) that runs only what has become due, continuing the same run.

    python delays.py            # the first invocation: a new run; s1 runs
    python delays.py continue   # each later one: whatever is due runs
"""

import sys

import eventor as evr


def prog(progname):
    return progname


def construct_and_run(mode):
    run_mode = evr.RUN_CONTINUE if mode == "continue" else evr.RUN_RESTART
    ev = evr.Eventor(name="delays", run_mode=run_mode, run_id="example",
                     config={"task_construct": "invoke"})

    ev1s = ev.add_event("run_step1")
    ev2s = ev.add_event("run_step2")
    ev3s = ev.add_event("run_step3")

    s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"},
                     triggers={evr.STEP_SUCCESS: (ev2s,)})
    s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"},
                     triggers={evr.STEP_SUCCESS: (ev3s,)})
    s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"})

    ev.add_assoc(ev1s, s1)
    ev.add_assoc(ev2s, s2, delay=1)
    ev.add_assoc(ev3s, s3, delay=1)

    if run_mode == evr.RUN_RESTART:
        ev.trigger_event(ev1s, 1)
    ev.run(max_loops=1)
    ev.close()
    print("outcome:", ev.outcome)
    return ev.outcome


if __name__ == "__main__":
    outcome = construct_and_run(sys.argv[1] if len(sys.argv) > 1 else "restart")
    raise SystemExit({"success": 0, "incomplete": 3}.get(outcome, 1))
