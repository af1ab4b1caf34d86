"""Port of the original's runly010: an AND join: s1 writes a file and, when complete, fires both
its own done event and s2's start; s3 starts when s1 and s2 are both done (an expression
event), in sequence 3.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, double_numbers, finish, pause, write_numbers

appname = os.path.splitext(os.path.basename(__file__))[0]


def build():
    ev = evr.Eventor(name=appname, config=CONFIG, config_tag="EVENTOR", store="")
    start1, done1 = ev.add_event("run_step1"), ev.add_event("done_step1")
    start2, done2 = ev.add_event("run_step2"), ev.add_event("done_step2")
    start3 = ev.add_event("run_step3", expr=(done1, done2))
    s1 = ev.add_step("s1", func=write_numbers, kwargs={"outfile": "source.txt"},
                     triggers={evr.StepStatus.complete: (done1, start2)})
    s2 = ev.add_step("s2", double_numbers, kwargs={}, triggers={evr.StepStatus.complete: (done2,)})
    s3 = ev.add_step("s3", pause, kwargs={"seconds": 1})
    ev.add_assoc(start1, s1)
    ev.add_assoc(start2, s2)
    ev.add_assoc(start3, s3)
    ev.trigger_event(start1, 3)
    return ev


if __name__ == "__main__":
    ev = build()
    ok = ev.run()
    ev.close()
    finish([ok])
