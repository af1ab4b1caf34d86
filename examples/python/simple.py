"""The original README's simple example: three steps in a chain, each started by the one
before it succeeding. Run it with `python simple.py`; the store is `simple.run.db` here."""

import logging
import os

import eventor as evr

appname = os.path.splitext(os.path.basename(__file__))[0]
logger = logging.getLogger(appname)


def prog(progname):
    logger.info("doing what %s is doing", progname)
    return progname


def construct_and_run():
    ev = evr.Eventor(name=appname)

    ev1s = ev.add_event("run_step1")
    ev2s = ev.add_event("run_step2")
    ev3s = ev.add_event("run_step3")

    s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"},
                     triggers={evr.StepStatus.success: (ev2s,)})
    s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"},
                     triggers={evr.StepStatus.success: (ev3s,)})
    s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"})

    ev.add_assoc(ev1s, s1)
    ev.add_assoc(ev2s, s2)
    ev.add_assoc(ev3s, s3)

    ev.trigger_event(ev1s, 1)
    ok = ev.run()
    ev.close()
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if construct_and_run() else 1)
