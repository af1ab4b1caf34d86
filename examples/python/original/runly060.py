"""Port of the original's runly060: the chain, each step acquiring one unit of a pool of two
(acris's virtual_resource_pool in the original, eventor.virtual_resource_pool in ours).
Runs on the original 5.1.9 and on ours (import eventor as evr)."""

import os

import eventor as evr
from shared import CONFIG, finish, prog

try:
    from acris import virtual_resource_pool as vrp
except ImportError:
    from eventor import virtual_resource_pool as vrp

appname = os.path.splitext(os.path.basename(__file__))[0]


class StepResource(vrp.Resource):
    pass


pool = vrp.ResourcePool("rp1", resource_cls=StepResource, policy={"resource_limit": 2}).load()
ev = evr.Eventor(name=appname, config=CONFIG, config_tag="EVENTOR")
start1, start2, start3 = (ev.add_event("run_step%d" % i) for i in (1, 2, 3))
s1 = ev.add_step("s1", func=prog, kwargs={"progname": "prog1"}, triggers={evr.STEP_SUCCESS: (start2,)},
                 acquires=[(pool, 1)])
s2 = ev.add_step("s2", func=prog, kwargs={"progname": "prog2"}, triggers={evr.STEP_SUCCESS: (start3,)},
                 acquires=[(pool, 1)])
s3 = ev.add_step("s3", func=prog, kwargs={"progname": "prog3"}, acquires=[(pool, 1)])
for event, step in ((start1, s1), (start2, s2), (start3, s3)):
    ev.add_assoc(event, step)
ev.trigger_event(start1, 1)
ok = ev.run()
ev.close()
finish([ok])
