"""Port of the original's runly070: the nested loops of runly050, each level also holding a unit
of its own pool of two while it iterates: the loop's first step acquires it and releases
nothing (releases=[]), its end step (no function) releases it; a loop runs up to two items
at once (max_concurrent=2 in the Container).
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import Container, finish, prog

try:
    from acris import virtual_resource_pool as vrp
except ImportError:
    from eventor import virtual_resource_pool as vrp

appname = os.path.splitext(os.path.basename(__file__))[0]
INVOKED = {"task_construct": "invoke", "pass_logger_to_task": True}


class StepResource(vrp.Resource):
    pass


def build():
    ev = evr.Eventor(name=appname)

    outer_start, outer_next = ev.add_event("s0_start"), ev.add_event("s0_next")
    inner_start, inner_next = ev.add_event("s0_00_start"), ev.add_event("s0_s00_next")
    start1, done1 = ev.add_event("s0_s00_s1_start"), ev.add_event("s0_s00_s1_success")
    start2, done2 = ev.add_event("s0_s00_s2_start", expr=(done1,)), ev.add_event("s0_s00_s2_success")
    start3 = ev.add_event("s0_s00_s3_start", expr=(done2,))

    outer_end, inner_end = ev.add_event("s0_end"), ev.add_event("s0_s00_end")
    pool1 = vrp.ResourcePool("RP1", resource_cls=StepResource, policy={"resource_limit": 2}).load()
    pool2 = vrp.ResourcePool("RP2", resource_cls=StepResource, policy={"resource_limit": 2}).load()
    outer = Container(progname="s0", loop=[1, 2], max_concurrent=2, iter_triggers=(inner_start,),
                      end_triggers=(outer_end,))
    s0first = ev.add_step("s0_start", func=outer, kwargs={"initial": True}, acquires=[(pool1, 1)],
                          releases=[], config=dict(INVOKED, max_concurrent=-1))
    s0next = ev.add_step("s0_next", func=outer, config=INVOKED)
    s0end = ev.add_step("s0_end", releases=[(pool1, 1)], config=INVOKED)
    inner = Container(progname="00", loop=[1, 2], max_concurrent=2, iter_triggers=(start1,),
                      end_triggers=(inner_end,))
    s00first = ev.add_step("s0_s00_start", func=inner, kwargs={"initial": True}, acquires=[(pool2, 1)],
                           releases=[], config=dict(INVOKED, max_concurrent=-1))
    s00next = ev.add_step("s0_s00_next", func=inner, config=INVOKED)
    s00end = ev.add_step("s0_s00_end", releases=[(pool2, 1)], config=INVOKED,
                         triggers={evr.STEP_SUCCESS: (outer_next,)})
    s1 = ev.add_step("s0.s00.s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.StepStatus.success: (done1,)})
    s2 = ev.add_step("s0.s00.s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (done2,)})
    s3 = ev.add_step("s0.s00.s3", func=prog, kwargs={"progname": "prog3"}, triggers={evr.STEP_COMPLETE: (inner_next,)})
    for event, step in ((outer_start, s0first), (outer_next, s0next), (outer_end, s0end),
                        (inner_start, s00first), (inner_next, s00next), (inner_end, s00end),
                        (start1, s1), (start2, s2), (start3, s3)):
        ev.add_assoc(event, step)
    ev.trigger_event(outer_start)
    return ev


if __name__ == "__main__":
    ev = build()
    ok = ev.run()
    ev.close()
    finish([ok])
