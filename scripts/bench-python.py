"""Per-step overhead of a chain of no-op Python steps, on whichever `eventor` the interpreter
imports (ours, or the original 5.1.9 set up by shared/original/setup_venv.sh): only the
original's API is used.

Usage: python scripts/bench-python.py [STEPS=200] [CONSTRUCT=invoke] [CONFIG_JSON]
Prints one line: package, construct, steps, seconds, milliseconds per step.
"""

import json
import logging
import os
import sys
import tempfile
import time

import eventor as evr


def noop(**_):  # the original passes `eventor=` to an invoked step
    return None


def chain(steps, construct, extra):
    workdir = tempfile.mkdtemp(prefix="bench-python-")
    os.chdir(workdir)
    config = dict({"task_construct": construct}, **extra)
    ev = evr.Eventor(name="bench", store=os.path.join(workdir, "bench.run.db"), config=config)
    events = [ev.add_event("e%d" % i) for i in range(steps)]
    for i in range(steps):
        after = {evr.STEP_SUCCESS: (events[i + 1],)} if i + 1 < steps else {}
        ev.add_assoc(events[i], ev.add_step("s%d" % i, func=noop, triggers=after))
    ev.trigger_event(events[0], 1)
    began = time.perf_counter()
    ok = ev.run()
    took = time.perf_counter() - began
    ev.close()
    return ok, took


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    construct = sys.argv[2] if len(sys.argv) > 2 else "invoke"
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    logging.disable(logging.INFO)  # the per-task lines would dominate a no-op step
    ok, took = chain(steps, construct, extra)
    version = getattr(evr, "__version__", "ours")
    print("eventor %s %s: %d steps in %.2f s, %.2f ms/step%s" % (
        version, construct, steps, took, took * 1000 / steps, "" if ok else " (run failed)"), flush=True)
    os._exit(0 if ok else 1)  # the original may hang at exit (its close does nothing)


if __name__ == "__main__":
    main()
