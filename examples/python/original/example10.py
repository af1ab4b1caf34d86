"""Port of the original's example10: a chain with delays (0, then 5 s, then 5 s; 2 s here)
run one loop at a time: a restart with max_loops=1, then continue runs of one loop each,
pausing between them, until nothing is left to do.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os
import time

import eventor as evr
from shared import finish, left_to_do, prog

appname = os.path.splitext(os.path.basename(__file__))[0]

def build(run_mode, delays, run_id=None):
    ev = evr.Eventor(name=appname, run_mode=run_mode, run_id=run_id)
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
    run_id = ev.run_id
    results = [ev.run(max_loops=1)]
    ev.close()
    rounds = 0
    while left_to_do(ev) and rounds < 20:
        rounds += 1
        time.sleep(1 if rounds % 4 else 3)
        ev = build(evr.RUN_CONTINUE, (0, 2, 2), run_id=run_id)
        results.append(ev.run(max_loops=1))
        ev.close()
    finish(results)
