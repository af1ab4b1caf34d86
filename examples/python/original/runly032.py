"""Port of the original's runly032: a chain with one-second delays whose middle step fails on
purpose; the recovery (same run id, the step fixed) goes on from there.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import logging
import os

import eventor as evr
from shared import finish, prog_may_fail

appname = os.path.splitext(os.path.basename(__file__))[0]


def build(run_mode, run_id=None, success=True):
    ev = evr.Eventor(name=appname, run_mode=run_mode, run_id=run_id,
                     config={"LOGGING": {"logging_level": logging.INFO}})
    start1, start2, start3 = (ev.add_event("run_step%d" % i) for i in (1, 2, 3))
    s1 = ev.add_step("s1", func=prog_may_fail, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)})
    s2 = ev.add_step("s2", func=prog_may_fail, kwargs={"progname": "prog2", "success": success},
                     triggers={evr.STEP_SUCCESS: (start3,)})
    s3 = ev.add_step("s3", func=prog_may_fail, kwargs={"progname": "prog3"})
    for event, step in ((start1, s1), (start2, s2), (start3, s3)):
        ev.add_assoc(event, step, delay=1)
    ev.trigger_event(start1, 1)
    return ev


if __name__ == "__main__":
    ev = build(evr.RUN_RESTART, success=False)
    run_id = ev.run_id
    failed = ev.run()
    ev.close()
    ev = build(evr.RUN_RECOVER, run_id=run_id)
    recovered = ev.run()
    ev.close()
    finish([failed, recovered])
