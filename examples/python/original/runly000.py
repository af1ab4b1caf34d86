"""Port of the original's runly000: a chain of three steps, each started by the success of the one
before, in sequence '1'; the config a dict.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import logging
import os

import eventor as evr
from shared import finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]


def build():
    ev = evr.Eventor(name=appname, config={"LOGGING": {"logging_level": logging.INFO}})
    start1, start2, start3 = (ev.add_event("run_step%d" % i) for i in (1, 2, 3))
    s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)})
    s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (start3,)})
    s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"})
    for event, step in ((start1, s1), (start2, s2), (start3, s3)):
        ev.add_assoc(event, step)
    ev.trigger_event(start1, "1")
    return ev


if __name__ == "__main__":
    ev = build()
    ok = ev.run()
    ev.close()
    finish([ok])
