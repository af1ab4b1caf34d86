"""Port of the original's runly003: the chain at module level, each step pausing (5 s in the
original, 1 s here), config from runly.conf.
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, finish, pause

appname = os.path.splitext(os.path.basename(__file__))[0]
ev = evr.Eventor(name=appname, config=CONFIG, config_tag="EVENTOR")
start1, start2, start3 = (ev.add_event("run_step%d" % i) for i in (1, 2, 3))
s1 = ev.add_step("s1", func=pause, kwargs={"seconds": 1}, triggers={evr.STEP_SUCCESS: (start2,)})
s2 = ev.add_step("s2", func=pause, kwargs={"seconds": 1}, triggers={evr.STEP_SUCCESS: (start3,)})
s3 = ev.add_step("s3", func=pause, kwargs={"seconds": 1})
ev.add_assoc(start1, s1)
ev.add_assoc(start2, s2)
ev.add_assoc(start3, s3)
ev.trigger_event(start1, 1)
ok = ev.run()
ev.close()
finish([ok])
