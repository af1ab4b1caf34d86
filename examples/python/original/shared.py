"""What the ported examples share, as the original's examples/program.py and run_types.py
did: the steps' work functions, the nested-loop Container, and how a program reports the
outcome of its runs. Every example here runs on the original 5.1.9 and on ours."""

import json
import logging
import os
import sys
import time

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runly.conf")


def task_logger():
    return logging.getLogger(os.getenv("EVENTOR_LOGGER_NAME"))


def prog(progname):
    """A step that says who and where it is, and returns its name."""
    task_logger().info("doing what %s is doing (step %s, sequence %s, recovery %s)", progname,
                       os.getenv("EVENTOR_STEP_NAME"), os.getenv("EVENTOR_STEP_SEQUENCE"),
                       os.getenv("EVENTOR_STEP_RECOVERY"))
    return progname


def prog_may_fail(progname, success=True):
    prog(progname)
    if not success:
        raise RuntimeError("%s fails on purpose" % progname)
    return progname


def write_numbers(outfile="source.txt"):
    with open(outfile, "w") as out:
        out.writelines("%d\n" % n for n in range(100))
    return True


def double_numbers(infile="source.txt", outfile="multi.txt"):
    with open(infile) as src, open(outfile, "w") as out:
        out.writelines("%d\n" % (int(line) * 2) for line in src)
    return True


def pause(seconds=1):
    task_logger().info("pausing %s s", seconds)
    time.sleep(seconds)
    return True


def left_to_do(ev):
    """How much of the run is left after a bounded run(): the original counts it with
    count_todos(); ours has no count_todos and says it in run()'s outcome."""
    if hasattr(ev, "count_todos"):
        return ev.count_todos()[0]
    return 1 if ev.outcome == "incomplete" else 0


class Container:
    """A step that iterates a loop, as the original's run_types.Container: its first call
    (initial=True) fires the iteration triggers in sequence 1; each later call, when it is
    the only thing left to do, fires the next iteration (sequence 2, ...), and after the last
    item fires the end triggers. It keeps its state between calls, so its steps are run
    with task_construct 'invoke' (in the engine's own process)."""

    def __init__(self, progname, loop=(1,), max_concurrent=1, iter_triggers=(), end_triggers=()):
        self.progname, self.items = progname, list(loop)
        self.max_concurrent, self.running = max_concurrent, 0
        self.iter_triggers, self.end_triggers = iter_triggers, end_triggers
        self.index = 0
        self.__name__ = "Container"

    def __call__(self, initial=False, eventor=None, logger=None):
        if initial:
            self.pending = iter(self.items)
            todos = 1
        else:
            todos = eventor.count_todos()[0]
            self.running -= 1
        if todos == 1 or initial and self.running < self.max_concurrent:
            item = next(self.pending, None)
            if item:
                self.index += 1
                self.running += 1
                for event in self.iter_triggers:
                    eventor.trigger_event(event, str(self.index))
            else:
                for event in self.end_triggers:
                    eventor.trigger_event(event, str(self.index))
        return True


def finish(results):
    """Prints each run()'s answer as one JSON line for scripts/side-by-side.py and exits 0
    when the last run succeeded."""
    sys.stdout.write("results: %s\n" % json.dumps([bool(r) for r in results]))
    sys.stdout.flush()
    raise SystemExit(0 if results and results[-1] else 1)
