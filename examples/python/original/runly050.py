"""Port of the original's runly050: two nested loops of two items each, driven by Container
steps run in the engine's process (invoke): the outer loop starts the inner one, whose
items each run s1 -> s2 -> s3; s3's end asks the inner loop for its next item, which it
gives when it is the only thing left to do (count_todos), and the inner loop's end asks the
outer one. The store is the config's sqfile00 entry.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, Container, finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]
INVOKED = {"task_construct": "invoke", "pass_logger_to_task": True}


def build():
    ev = evr.Eventor(name=appname, config=CONFIG, config_tag="EVENTOR", store="sqfile00")

    outer_start, outer_next = ev.add_event("s0_start"), ev.add_event("s0_next")
    inner_start, inner_next = ev.add_event("s0_00_start"), ev.add_event("s0_s00_next")
    start1, done1 = ev.add_event("s0_s00_s1_start"), ev.add_event("s0_s00_s1_success")
    start2, done2 = ev.add_event("s0_s00_s2_start", expr=(done1,)), ev.add_event("s0_s00_s2_success")
    start3 = ev.add_event("s0_s00_s3_start", expr=(done2,))

    outer = Container(progname="S0", loop=[1, 2], iter_triggers=(inner_start,))
    s0first = ev.add_step("s0_start", func=outer, kwargs={"initial": True}, config=dict(INVOKED, max_concurrent=-1))
    s0next = ev.add_step("s0_next", func=outer, config=INVOKED)
    inner = Container(progname="S00", loop=[1, 2], iter_triggers=(start1,), end_triggers=(outer_next,))
    s00first = ev.add_step("s0_s00_start", func=inner, kwargs={"initial": True}, config=dict(INVOKED, max_concurrent=-1))
    s00next = ev.add_step("s0_s00_next", func=inner, config=INVOKED)
    s1 = ev.add_step("s0.s00.s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (done1,)})
    s2 = ev.add_step("s0.s00.s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (done2,)})
    s3 = ev.add_step("s0.s00.s3", func=prog, kwargs={"progname": "prog3"}, triggers={evr.STEP_COMPLETE: (inner_next,)})
    for event, step in ((outer_start, s0first), (outer_next, s0next), (inner_start, s00first),
                        (inner_next, s00next), (start1, s1), (start2, s2), (start3, s3)):
        ev.add_assoc(event, step)
    ev.trigger_event(outer_start, "0")
    return ev


if __name__ == "__main__":
    ev = build()
    ok = ev.run()
    ev.close()
    finish([ok])
