"""Port of the original's runly040: a loop driven by steps: an invoked step takes the next item
of a list and fires the chain s1 -> s2 -> s3 in the item's sequence; s3's success fires the
loop step again, until the list is used up. The original fired the chain with
remote_trigger_event (ours has trigger_event alone, which the original's invoked steps may
also call).
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import logging
import os

import eventor as evr
from shared import finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]


class NextItem:
    """Fires ``triggers`` in the next item's sequence (1, 2, ...) at each call."""

    def __init__(self, ev, items, triggers):
        self.ev, self.items, self.triggers, self.index = ev, list(items), triggers, 0

    def __call__(self, initial=False):
        if initial:
            self.pending = iter(self.items)
        if next(self.pending, None):
            self.index += 1
            fire = getattr(self.ev, "remote_trigger_event", self.ev.trigger_event)
            for event in self.triggers:
                fire(event, self.index)
        return True


ev = evr.Eventor(name=appname, config_tag="EVENTOR",
                 config={"EVENTOR": {"shared_db": True, "LOGGING": {"logging_level": logging.INFO}}})
first, again = ev.add_event("run_s0first"), ev.add_event("run_s0next")
start1, start2, start3 = (ev.add_event("run_s%d" % i) for i in (1, 2, 3))
loop = NextItem(ev, [1, 2], (start1,))
s0first = ev.add_step("s0first", func=loop, kwargs={"initial": True}, config={"task_construct": "invoke"})
s0next = ev.add_step("s0next", func=loop, config={"task_construct": "invoke"})
s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)})
s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (start3,)})
s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"}, triggers={evr.STEP_SUCCESS: (again,)})
for event, step in ((first, s0first), (again, s0next), (start1, s1), (start2, s2), (start3, s3)):
    ev.add_assoc(event, step)
ev.trigger_event(first)
ok = ev.run()
ev.close()
finish([ok])
