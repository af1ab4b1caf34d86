"""The original README's recovery example: s1 succeeds, s2 fails on bad input, so the run
fails; run again with `recover` (and good input): s1 is skipped (it succeeded), s2 and s3
run, and the run succeeds.

    python recovery.py restart bad     # fails in s2
    python recovery.py recover good    # s1 skipped, s2 and s3 run
"""

import sys

import eventor as evr


def prog(progname, fail=False):
    if fail:
        raise ValueError("%s got bad input" % progname)
    return progname


def construct_and_run(mode, bad):
    run_mode = evr.RUN_RECOVER if mode == "recover" else evr.RUN_RESTART
    ev = evr.Eventor(name="recovery", run_mode=run_mode, run_id="example",
                     config={"task_construct": "invoke"})

    ev1s = ev.add_event("run_step1")
    ev2s = ev.add_event("run_step2")
    ev3s = ev.add_event("run_step3")

    s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"},
                     triggers={evr.STEP_SUCCESS: (ev2s,)})
    s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2", "fail": bad},
                     triggers={evr.STEP_SUCCESS: (ev3s,)},
                     recovery={evr.STEP_FAILURE: evr.STEP_RERUN, evr.STEP_SUCCESS: evr.STEP_SKIP})
    s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"})

    ev.add_assoc(ev1s, s1)
    ev.add_assoc(ev2s, s2)
    ev.add_assoc(ev3s, s3)

    ev.trigger_event(ev1s, 1)
    ok = ev.run()
    ev.close()
    return ok


if __name__ == "__main__":
    mode, quality = (sys.argv[1:3] + ["restart", "bad"][len(sys.argv[1:3]):])
    raise SystemExit(0 if construct_and_run(mode, quality == "bad") else 1)
