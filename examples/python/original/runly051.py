"""Port of the original's runly051: the nested loops with Containers of the example's own:
their __call__ takes no eventor argument (the flow is kept in the object) and compares
count_todos()'s whole answer with 1; ending steps s0_end and s0_s00_end, s0_end with no
function at all.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]


class OwnContainer:
    def __init__(self, ev, progname, loop=(1,), iter_triggers=(), end_triggers=()):
        self.ev, self.progname, self.items = ev, progname, list(loop)
        self.iter_triggers, self.end_triggers, self.index = iter_triggers, end_triggers, 0

    def __call__(self, initial=False):
        if initial:
            self.pending, todos = iter(self.items), 1
        else:
            todos = self.ev.count_todos()
        if todos == 1 or initial:
            item = next(self.pending, None)
            events = self.iter_triggers if item else self.end_triggers
            if item:
                self.index += 1
            for event in events:
                self.ev.trigger_event(event, self.index)
        return True


ev = evr.Eventor(name=appname, config=CONFIG, config_tag="EVENTOR", store="sqfile00")
outer_start, outer_next, outer_end = ev.add_event("s0_start"), ev.add_event("s0_next"), ev.add_event("s0_end")
inner_start, inner_next = ev.add_event("s0_00_start"), ev.add_event("s0_s00_next")
inner_end = ev.add_event("s0_s00_end")
start1, done1 = ev.add_event("s0_s00_s1_start"), ev.add_event("s0_s00_s1_success")
start2, done2 = ev.add_event("s0_s00_s2_start", expr=(done1,)), ev.add_event("s0_s00_s2_success")
start3 = ev.add_event("s0_s00_s3_start", expr=(done2,))
ev.add_event("s0_s00_end_complete")

outer = OwnContainer(ev, "S0", loop=[1, 2], iter_triggers=(inner_start,))
s0first = ev.add_step("s0_start", func=outer, kwargs={"initial": True},
                      config={"max_concurrent": -1, "task_construct": "invoke"})
s0next = ev.add_step("s0_next", func=outer, config={"task_construct": "invoke"})
s0end = ev.add_step("s0_end", config={"task_construct": "invoke"})
inner = OwnContainer(ev, "S00", loop=[1, 2], iter_triggers=(start1,), end_triggers=(inner_end,))
s00first = ev.add_step("s0_s00_start", func=inner, kwargs={"initial": True},
                       config={"max_concurrent": -1, "task_construct": "invoke"})
s00next = ev.add_step("s0_s00_next", func=inner, config={"task_construct": "invoke"})
s00end = ev.add_step("s0_s00_end", triggers={evr.STEP_COMPLETE: (outer_next,)})
s1 = ev.add_step("s0.s00.s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (done1,)})
s2 = ev.add_step("s0.s00.s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (done2,)})
s3 = ev.add_step("s0.s00.s3", func=prog, kwargs={"progname": "prog3"}, triggers={evr.STEP_COMPLETE: (inner_next,)})
for event, step in ((outer_start, s0first), (outer_next, s0next), (outer_end, s0end),
                    (inner_start, s00first), (inner_next, s00next), (inner_end, s00end),
                    (start1, s1), (start2, s2), (start3, s3)):
    ev.add_assoc(event, step)
ev.trigger_event(outer_start)
ok = ev.run()
ev.close()
finish([ok])
