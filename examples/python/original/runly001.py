"""Port of the original's runly001: the same chain built by a subclass of Eventor, its config
read from runly.conf (the original also chose a Postgres store, pgdb2; here the default
store).
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, finish, prog

appname = os.path.splitext(os.path.basename(__file__))[0]


class ChainEventor(evr.Eventor):
    def __init__(self):
        super().__init__(name=appname, config=CONFIG, config_tag="EVENTOR")

    def build_and_run(self):
        start1, start2, start3 = (self.add_event("run_step%d" % i) for i in (1, 2, 3))
        s1 = self.add_step("s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)})
        s2 = self.add_step("s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (start3,)})
        s3 = self.add_step("s3", func=prog, kwargs={"progname": "prog3"})
        for event, step in ((start1, s1), (start2, s2), (start3, s3)):
            self.add_assoc(event, step)
        self.trigger_event(start1, 1)
        ok = self.run()
        self.close()
        return ok


if __name__ == "__main__":
    finish([ChainEventor().build_and_run()])
