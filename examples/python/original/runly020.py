"""Port of the original's runly020: the AND join with per-step recovery policies, started in
recover mode although no run was made before (so there is nothing to recover).
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import logging
import os

import eventor as evr
from shared import double_numbers, finish, pause, write_numbers

appname = os.path.splitext(os.path.basename(__file__))[0]
ev = evr.Eventor(name=appname, run_mode=evr.RUN_RECOVER, config_tag="EVENTOR",
                 config={"EVENTOR": {"shared_db": False, "LOGGING": {"logging_level": logging.INFO}}})
start1, done1 = ev.add_event("run_step1"), ev.add_event("done_step1")
start2, done2 = ev.add_event("run_step2"), ev.add_event("done_step2")
start3 = ev.add_event("run_step3", expr=(done1, done2))
s1 = ev.add_step("s1", func=write_numbers, kwargs={"outfile": "source.txt"},
                 triggers={evr.STEP_COMPLETE: (done1, start2)},
                 recovery={evr.STEP_FAILURE: evr.STEP_RERUN, evr.STEP_SUCCESS: evr.STEP_RERUN})
s2 = ev.add_step("s2", double_numbers, kwargs={}, triggers={evr.STEP_COMPLETE: (done2,)},
                 recovery={evr.STEP_FAILURE: evr.STEP_RERUN, evr.STEP_SUCCESS: evr.STEP_SKIP})
s3 = ev.add_step("s3", pause, kwargs={"seconds": 1})
ev.add_assoc(start1, s1)
ev.add_assoc(start2, s2)
ev.add_assoc(start3, s3)
ev.trigger_event(start1, 3)
ok = ev.run()
ev.close()
finish([ok])
