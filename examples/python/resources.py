"""The original README's resources example: four steps, each acquiring one unit of a pool
of two, so at most two run at once (each in its own process, the original's default)."""

import os
import sys
import time

import eventor as evr
from eventor.virtual_resource_pool import Resource, ResourcePool


def prog(progname):
    began = time.time()
    time.sleep(0.3)
    # One write per line: the steps' processes share stdout and run at the same time.
    sys.stdout.write("%s ran in process %d\n" % (progname, os.getpid()))
    sys.stdout.flush()
    return [began, time.time()]


def construct_and_run():
    rp1 = ResourcePool("rp1", resource_cls=Resource, policy={"resource_limit": 2}).load()
    ev = evr.Eventor(name="resources")

    start = ev.add_event("start")
    steps = [ev.add_step("s%d" % i, func=prog, kwargs={"progname": "prog%d" % i},
                         acquires=[(rp1, 1)]) for i in range(1, 5)]
    ev.add_assoc(start, *steps)

    ev.trigger_event(start, 1)
    ok = ev.run()
    ev.close()
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if construct_and_run() else 1)
