"""Port of the original's runly090: the chain with delays (0, 10 s, 10 s; 2 s here): one
run(max_loops=1), then run() again on the same Eventor to finish.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]

def build(run_mode, delays, run_id=None):
    ev = evr.Eventor(name=appname, run_mode=run_mode, run_id=run_id, config=CONFIG, config_tag="EVENTOR")
    start1, start2, start3 = (ev.add_event("run_step%d" % i) for i in (1, 2, 3))
    s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)})
    s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (start3,)})
    s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"})
    for event, step, delay in zip((start1, start2, start3), (s1, s2, s3), delays):
        ev.add_assoc(event, step, delay=delay)
    ev.trigger_event(start1, 1)
    return ev


if __name__ == "__main__":
    ev = build(evr.RUN_RESTART, (0, 2, 2))
    first = ev.run(max_loops=1)
    second = ev.run()
    ev.close()
    finish([first, second])
