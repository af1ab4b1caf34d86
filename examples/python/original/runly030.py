"""Port of the original's runly030: fail, then recover: s2 takes the square root of its input;
the first run gives it -9 and fails, the recovery (same run id) gives it 9. s2 is rerun
after a failure and skipped after a success; s3 waits for s1 and s2.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import logging
import math
import os

import eventor as evr
from shared import finish

appname = os.path.splitext(os.path.basename(__file__))[0]
logger = logging.getLogger(appname)


def square(x):
    return x * x


def square_root(x):
    return math.sqrt(x)


def divide(x, y):
    return x / y


def build(run_mode=evr.RUN_RESTART, run_id=None, param=9):
    ev = evr.Eventor(name=appname, run_mode=run_mode, run_id=run_id, config_tag="EVENTOR",
                     config={"EVENTOR": {"shared_db": False, "LOGGING": {"logging_level": logging.INFO}}})
    start1, done1 = ev.add_event("run_step1"), ev.add_event("done_step1")
    start2, done2 = ev.add_event("run_step2"), ev.add_event("done_step2")
    start3 = ev.add_event("run_step3", expr=(done1, done2))
    s1 = ev.add_step("s1", func=square, kwargs={"x": 3}, triggers={evr.STEP_SUCCESS: (done1, start2)})
    s2 = ev.add_step("s2", square_root, args=[param], triggers={evr.STEP_SUCCESS: (done2,)},
                     recovery={evr.STEP_FAILURE: evr.STEP_RERUN, evr.STEP_SUCCESS: evr.STEP_SKIP})
    s3 = ev.add_step("s3", divide, kwargs={"x": 9, "y": 3})
    ev.add_assoc(start1, s1)
    ev.add_assoc(start2, s2)
    ev.add_assoc(start3, s3)
    ev.trigger_event(start1, 3)
    return ev


if __name__ == "__main__":
    ev = build(param=-9)
    run_id = ev.run_id
    failed = ev.run()
    ev.close()
    ev = build(run_mode=evr.RUN_RECOVER, run_id=run_id, param=9)
    recovered = ev.run()
    ev.close()
    finish([failed, recovered])
