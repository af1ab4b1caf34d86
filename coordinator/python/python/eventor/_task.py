"""How a Python step runs: in this process ('invoke', 'thread') or in a forked child
('process'), its return value as JSON text (else its repr), an exception as its traceback.

Each runner returns ``(ok, text)`` to the engine: ``text`` is the result's JSON, or the
error. The engine calls it on one of its closure threads holding the GIL; a forked step's
parent waits in ``os.read`` and ``os.waitpid``, which release the GIL meanwhile.
"""

import inspect
import io
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
import warnings

from . import _eventor

CONSTRUCTS = ("invoke", "thread", "process")


def encode(value):
    """The result as JSON text, or its repr as a JSON string when it is not JSON."""
    try:
        return json.dumps(value, allow_nan=False)  # NaN and infinities are no JSON
    except (TypeError, ValueError):
        return json.dumps(repr(value))


# In a forked child: the events its task triggered, sent back with its answer for the
# parent (which holds the way to the engine) to fire. None in the process itself.
child_triggers = None
# In a forked child: its task's log records for the central log, as (level, text), which
# the parent writes there (the run's log writer is the parent's). None in the process itself.
child_logs = None


def trigger(event, sequence):
    """Fires ``event`` in ``sequence`` in the running task's run."""
    if child_triggers is not None:
        child_triggers.append((event, sequence))
    else:
        _eventor.trigger_from_task(event, sequence)


def call(func, args, kwargs):
    """``(ok, text)`` of one call of the user's function."""
    try:
        value = func(*args, **kwargs)
    except BaseException as error:  # the step's failure, whatever it raised
        # The traceback from the user's function down (this frame says nothing to them).
        frames = error.__traceback__.tb_next if error.__traceback__ else None
        return False, "".join(traceback.format_exception(type(error), error, frames))
    return True, encode(value)


def task_environ(task):
    """The variables a task sees, as commands get them from the engine."""
    prefix = task.env_prefix
    return {
        prefix + "STEP_NAME": task.step,
        prefix + "STEP_SEQUENCE": task.sequence,
        prefix + "STEP_RECOVERY": str(task.recovery),
        prefix + "LOGGER_NAME": "%s.%s_%s" % (task.flow, task.step, task.sequence),
        prefix + "RUN_ID": task.run_id,
    }


def in_child(func, args, kwargs, task, write_end):
    """The forked child: runs the call, writes ``[ok, text]`` as JSON, exits at once."""
    global child_triggers, child_logs
    code = 0
    try:
        _eventor.die_with_parent()
        fresh_std_streams()
        child_triggers, child_logs = [], []
        if task is not None:
            os.environ.update(task_environ(task))
        ok, text = call(func, args, kwargs)
        answer = json.dumps([ok, text, child_triggers, child_logs]).encode()
        view = memoryview(answer)
        while view:
            view = view[os.write(write_end, view):]
    except BaseException:  # nothing may unwind into the parent's copy of the engine
        code = 70
    finally:
        flush_std_streams()
        os._exit(code)


def fresh_std_streams():
    """In a forked child: stdout and stderr as new objects over the same descriptors. A
    thread of the parent may have been writing to one at the fork (its buffer's lock held,
    the GIL let go for the write), and that lock stays taken in the child for good."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            if old is None or old.fileno() != fd:
                continue  # replaced by the program (a capture, say): left as it is
            raw = io.FileIO(fd, "w", closefd=False)
            new = io.TextIOWrapper(io.BufferedWriter(raw), encoding=old.encoding,
                                   errors=old.errors, line_buffering=old.line_buffering)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            continue
        setattr(sys, name, new)


# Steps forking at once flush and fork one at a time: between one thread's flush and its fork
# another could start flushing (the interpreter lets go of the GIL between instructions), and
# its child would inherit that buffer's lock taken.
FORK_LOCK = threading.Lock()


def flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing to pass on
            pass


def describe(status):
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


# How long a timed-out child gets between SIGTERM and SIGKILL.
KILL_GRACE = 5.0


def read_all(read_end, deadline):
    """Everything the child writes, or None when ``deadline`` (monotonic) passes first."""
    chunks = []
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                return None
        chunk = os.read(read_end, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def stop(pid):
    """SIGTERM, up to KILL_GRACE seconds, then SIGKILL; the child's wait status."""
    os.kill(pid, signal.SIGTERM)
    until = time.monotonic() + KILL_GRACE
    while time.monotonic() < until:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def forked(func, args, kwargs, task, timeout=None):
    """Runs the call in a child forked from this (waiting) thread; ``(ok, text)``. A child
    still running after ``timeout`` seconds is stopped and the task fails saying so."""
    read_end, write_end = os.pipe()
    # What the program wrote but Python has not yet passed on would be written again by
    # each child as it leaves.
    with FORK_LOCK, warnings.catch_warnings():
        flush_std_streams()
        # Python 3.12 warns of fork in a threaded process; only this thread runs in the
        # child, and it leaves with os._exit.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read_end)
        in_child(func, args, kwargs, task, write_end)
    os.close(write_end)
    deadline = None if timeout is None else time.monotonic() + timeout
    answer = None
    try:
        answer = read_all(read_end, deadline)
    finally:
        os.close(read_end)
        status = stop(pid) if answer is None else os.waitpid(pid, 0)[1]
    if answer is None:
        return False, "timed out after %g s (the step's process was stopped: %s)" % (timeout, describe(status))
    if not answer:
        return False, "the step's process ended without a result (%s)" % describe(status)
    ok, text, triggered, logged = json.loads(answer)
    for level, record in logged:
        _eventor.log_from_task(level, record)
    for event, sequence in triggered:
        trigger(event, sequence)
    return bool(ok), text


def takes_eventor(func):
    """Whether ``func`` has a parameter named ``eventor`` (the original's invoke passed it)."""
    try:
        return "eventor" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def runner(step, func, args, kwargs, settings, timeout, logger, current_task, eventor):
    """The callable the engine calls for each task of ``step``; a function with an ``eventor``
    parameter gets the flow's ``eventor`` there, as the original's invoke gave it.
    ``settings``: ``task_construct``, ``sequence_arg_name`` (the keyword the sequence is
    passed in, if any) and ``pass_logger_to_task`` (the task's logger as ``logger``)."""
    construct = settings["task_construct"]
    sequence_arg, pass_logger = settings["sequence_arg_name"], settings["pass_logger_to_task"]
    if construct not in CONSTRUCTS:
        raise ValueError("step %s: task_construct %r is not one of %s" % (step, construct, ", ".join(CONSTRUCTS)))
    if timeout is not None and construct != "process":
        raise ValueError("step %s: a timeout needs task_construct 'process' (a function called "
                         "in this process cannot be stopped)" % step)
    args, kwargs = tuple(args), dict(kwargs)
    if takes_eventor(func) and "eventor" not in kwargs:
        kwargs["eventor"] = eventor

    def run_task():
        task = current_task()
        name = "%s/%s" % (step, task.sequence if task else "?")
        logger.info("[ Task %s ] Attempting to run", name)
        given = kwargs
        if task is not None and (sequence_arg or pass_logger):
            given = dict(kwargs)
            if sequence_arg:
                given[sequence_arg] = task.sequence
            if pass_logger:
                given["logger"] = logger.getChild("%s_%s" % (task.step, task.sequence))
        if construct == "process":
            ok, text = forked(func, args, given, task, timeout)
        else:
            ok, text = call(func, args, given)
        if ok:
            logger.info("[ Task %s ] Completed, status: success, result: %s", name, text)
        else:
            logger.info("[ Task %s ] Completed, status: failure\n%s", name, text.rstrip())
        return ok, text

    return run_task
