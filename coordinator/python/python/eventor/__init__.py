"""eventor: the original Eventor's Python API (``import eventor as evr``) on the Rust engine.

A program written for the original runs with its imports unchanged: define events and steps
on an ``Eventor``, trigger, ``run()``. Steps are Python callables (run in this process with
``task_construct`` 'invoke' or 'thread', or in a forked child with 'process', the default) or
shell commands (a ``str``).
"""

import collections
import importlib.metadata
import enum
import json
import logging
import os
import sys

from . import _eventor, _task
from .virtual_resource_pool import ResourcePool

try:
    __version__ = importlib.metadata.version("eventor")
except importlib.metadata.PackageNotFoundError:  # imported from the source tree
    __version__ = "0"

__all__ = [
    "Eventor", "Event", "Step", "Task", "current_task", "or_",
    "StepStatus", "StepReplay", "RunMode",
    "STEP_READY", "STEP_ACTIVE", "STEP_SUCCESS", "STEP_FAILURE", "STEP_COMPLETE",
    "STEP_RERUN", "STEP_SKIP", "RUN_RESTART", "RUN_RECOVER", "RUN_CONTINUE",
]


class StepStatus(enum.Enum):
    """A task's status, as a step's ``triggers`` and ``recovery`` name it (the original's
    numbers)."""
    ready = 1
    active = 4
    success = 5
    failure = 6
    complete = 7  # success or failure


class StepReplay(enum.Enum):
    """What a recovery does with a step's task, by its earlier status."""
    rerun = 1
    skip = 2


class RunMode(enum.Enum):
    restart = 1
    recover = 2
    continue_ = 3


STEP_READY = StepStatus.ready
STEP_ACTIVE = StepStatus.active
STEP_SUCCESS = StepStatus.success
STEP_FAILURE = StepStatus.failure
STEP_COMPLETE = StepStatus.complete
STEP_RERUN = StepReplay.rerun
STEP_SKIP = StepReplay.skip
RUN_RESTART = RunMode.restart
RUN_RECOVER = RunMode.recover
RUN_CONTINUE = RunMode.continue_

class Task(collections.namedtuple("Task", "run_id flow step sequence recovery attempt env_prefix")):
    """The task running a step: its run, step, sequence, recovery and attempt."""

    def trigger_event(self, event, sequence=None, db=None):
        """Fires ``event`` in ``sequence`` (default: this task's) in this task's run, as soon
        as the engine's next turn (to iterate a loop: the start event, the next sequence)."""
        _task.trigger(_name_of(event, "the event"), self.sequence if sequence is None else str(sequence))


def current_task():
    """The task running this code (step, sequence, recovery, ...), or None outside a step."""
    identity = _eventor.task_identity()
    return None if identity is None else Task(*identity)


class Event:
    """An event of a flow (``add_event``'s answer)."""

    def __init__(self, name, expr=None):
        self.name, self.expr = name, expr

    def __repr__(self):
        return "Event(%r)" % self.name


class Step:
    """A step of a flow (``add_step``'s answer)."""

    def __init__(self, name, func, args, kwargs, config):
        self.name, self.func, self.args, self.kwargs, self.config = name, func, args, kwargs, config

    def __repr__(self):
        return "Step(%r)" % self.name


def or_(*operands):
    """An OR of events, as a list is."""
    return list(operands)


# The config's settings that only this package reads (the engine warns of them).
PYTHON_KEYS = ("task_construct", "sequence_arg_name", "pass_logger_to_task")
STEP_CONFIG_KEYS = ("stop_on_exception", "max_concurrent", "timeout") + PYTHON_KEYS
# The original's settings that a step's config may repeat and that mean nothing here.
ORIGINAL_ONLY_KEYS = ("debug", "envvar_prefix", "sleep_between_loops", "day_to_keep_db",
                      "remote_method", "shared_db", "ssh_config", "ssh_host", "ssh_port",
                      "workdir", "logdir")


def _name_of(thing, kind):
    if isinstance(thing, (Event, Step)):
        return thing.name
    if isinstance(thing, str):
        return thing
    raise ValueError("%s must be an Event, a Step or a name, not %r" % (kind, thing))


def _expr(operand):
    """An expression as the engine takes it: a tuple is AND, a list OR, nested freely."""
    if isinstance(operand, (Event, str)):
        return _name_of(operand, "an expression's operand")
    if isinstance(operand, tuple):
        return ("and", [_expr(o) for o in operand])
    if isinstance(operand, list):
        return ("or", [_expr(o) for o in operand])
    raise ValueError("an expression is an Event, a tuple (and) or a list (or) of them, not %r" % (operand,))


def _status(status):
    if isinstance(status, StepStatus):
        return status.name
    if isinstance(status, str) and status in StepStatus.__members__:
        return status
    raise ValueError("unknown step status %r" % (status,))


def _replay(replay):
    if isinstance(replay, StepReplay):
        return replay.name
    if isinstance(replay, str) and replay in StepReplay.__members__:
        return replay
    raise ValueError("unknown step replay %r" % (replay,))


def _run_mode(mode):
    if isinstance(mode, RunMode):
        return mode.name.rstrip("_")
    if mode in ("restart", "recover", "continue"):
        return mode
    raise ValueError("unknown run mode %r" % (mode,))


def _program_name():
    """The original's default name: the running program's file name."""
    base = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "")
    name = os.path.splitext(base)[0]
    return name if name and name not in ("-c", "-m") else "eventor"


def _config_source(config, tag):
    """``(path, text)``: a config file's path, or a dict as JSON text under ``tag`` (a dict
    may hold the section itself, or the section under its tag)."""
    if isinstance(config, (str, os.PathLike)):
        return os.fspath(config), None
    if not isinstance(config, dict):
        raise ValueError("config is a dict or a config file's path, not %r" % (config,))
    section = config.get(tag) if isinstance(config.get(tag), dict) else config
    if not section:
        return None, None
    return None, json.dumps({tag: section}, default=str)


_LOG_FORMAT = "[ %(asctime)s ][ %(levelname)s ][ %(message)s ][ %(name)s ]"


class _CentralLog(logging.Handler):
    """Passes a record logged on a step's thread into its run's central log, as the task's
    (its step and sequence on the line); records logged elsewhere are not a task's."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        try:
            if _task.child_logs is not None:
                # A forked step's child: the run's log writer is its parent's, which
                # writes these when the child has answered.
                _task.child_logs.append((record.levelno, self.format(record)))
                return
            _eventor.log_from_task(record.levelno, self.format(record))
        except Exception:  # logging must not fail the step
            self.handleError(record)


_CENTRAL = _CentralLog()


def _logger(name, level):
    """The flow's logger at the config's ``LOGGING`` level. A program that set up no logging
    gets a console handler at that level on the root logger (so it sees INFO lines, its
    steps' records too); every record logged on a step's thread also goes to the central
    log."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    if _CENTRAL not in root.handlers:
        root.addHandler(_CENTRAL)
    logger = logging.getLogger(name)
    logger.setLevel(level)
    return logger


def _cluster(hosts):
    """``(hosts file, interpreter, script)``: on each host the prime starts this program as
    it runs here, the interpreter (a host's ``python:`` instead) running the script, which
    must sit at the same absolute path there."""
    if hosts is None:
        return None
    script = sys.argv[0] if sys.argv else ""
    if not script or script in ("-c", "-m") or not os.path.isfile(script):
        raise ValueError("hosts: steps on other hosts need this program to be a script file "
                         "(its path is how the hosts start it), not %r" % (script,))
    if not sys.executable:
        raise ValueError("hosts: the Python interpreter's path is unknown (sys.executable)")
    return os.fspath(hosts), sys.executable, os.path.abspath(script)


class Eventor:
    """A flow: events, steps and associations, run on the engine with ``run()``."""

    # The original's parameters, in its order (a program may pass them by position).
    def __init__(self, name="", store="", run_mode=RUN_RESTART, recovery_run=None, host=None,
                 remotes=None, run_id="", config=None, config_tag=None, hosts=None):
        if host is not None or remotes:
            raise ValueError("host and remotes: name the hosts in a hosts file instead "
                             "(Eventor(hosts=FILE), add_step(host=NAME))")
        config = {} if config is None else config
        tag = config_tag or os.environ.get("EVENTOR_CONFIG_TAG") or "EVENTOR"
        path, text = _config_source(config, tag)
        self.name = name or _program_name()
        self._flow = _eventor.Flow(self.name, str(store or ""), _run_mode(run_mode),
                                   str(run_id or ""), recovery_run, path, text, tag,
                                   _cluster(hosts))
        construct, sequence_arg, pass_logger = self._flow.python_settings
        # The original's defaults: each task in a child process, no extra arguments.
        self._defaults = {"task_construct": construct or "process",
                          "sequence_arg_name": sequence_arg, "pass_logger_to_task": pass_logger}
        self._logger = _logger(self.name, self._flow.log_level)
        for warning in self._flow.config_warnings:
            if not any(key in warning for key in PYTHON_KEYS):
                self._logger.warning("config: %s", warning)
        self._run_id, self._store = self._flow.run_id, self._flow.store
        self._events, self._steps, self._pools = {}, {}, {}
        self.outcome = None
        self.outcome_text = None

    # Kept here: the flow is borrowed by a running run(), which a step may call back into.
    @property
    def run_id(self):
        return self._run_id

    @property
    def store(self):
        return self._store

    def add_event(self, name, expr=None):
        """An event; with ``expr`` (a tuple is AND, a list OR), it fires in a sequence when
        the expression holds there."""
        self._flow.add_event(name, None if expr is None else _expr(expr))
        event = self._events[name] = Event(name, expr)
        return event

    def add_step(self, name, func=None, args=(), kwargs=None, triggers=None, host=None,
                 acquires=None, releases=None, recovery=None, config=None, hosts=None):
        """A step: ``func`` a callable (run with ``args`` and ``kwargs``) or a shell command;
        with ``host`` (a name) or ``hosts`` (names), it runs on one of those hosts of the
        hosts file given to ``Eventor(hosts=...)``, a callable in this same script there."""
        if host is not None and hosts:
            raise ValueError("step %s: give host or hosts, not both" % name)
        hosts = [host] if host is not None else list(hosts or [])
        for entry in hosts:
            if not isinstance(entry, str) or not entry:
                raise ValueError("step %s: a host is a name from the hosts file, not %r" % (name, entry))
        kwargs, triggers, config = dict(kwargs or {}), dict(triggers or {}), dict(config or {})
        for key in sorted(set(config) - set(STEP_CONFIG_KEYS)):
            if key not in ORIGINAL_ONLY_KEYS:
                raise ValueError("step %s: unknown config %s (known: %s)" % (name, key, ", ".join(STEP_CONFIG_KEYS)))
            self._logger.warning("step %s: config %s has no effect here", name, key)
        timeout = config.get("timeout")
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < 1e9):
            raise ValueError("step %s: timeout must be a positive number of seconds, not %r" % (name, timeout))
        command = call = None
        if isinstance(func, str):
            command = func
        elif func is not None:
            if not callable(func):
                raise ValueError("step %s: func must be callable or a command, not %r" % (name, func))
            settings = dict(self._defaults, **{k: config[k] for k in PYTHON_KEYS if k in config})
            call = _task.runner(name, func, args, kwargs, settings, timeout, self._logger,
                                current_task, self)
        pairs = []
        for status, events in triggers.items():
            events = events if isinstance(events, (tuple, list)) else (events,)
            pairs += [(_status(status), _name_of(e, "a trigger")) for e in events]
        replays = [(_status(s), _replay(r)) for s, r in dict(recovery or {}).items()]
        self._flow.add_step(
            name, command, call, pairs, replays, self._units(acquires or []),
            None if releases is None else self._units(releases),
            config.get("stop_on_exception"), config.get("max_concurrent"), config.get("timeout"),
            hosts)
        step = self._steps[name] = Step(name, func, args, kwargs, config)
        return step

    def _units(self, pairs):
        """``[(pool, n)]`` as (name, n); a pool seen the first time joins the flow."""
        units = []
        for entry in pairs:
            pool, count = entry if isinstance(entry, (tuple, list)) else (entry, 1)
            if isinstance(pool, ResourcePool):
                if pool.name not in self._pools:
                    self._flow.add_pool(pool.name, pool.resource_limit, pool.shared)
                    self._pools[pool.name] = pool
                pool = pool.name
            units.append((str(pool), int(count)))
        return units

    def add_assoc(self, event, *targets, delay=0):
        """When ``event`` fires in a sequence, activates each target (a step or an event) in
        it, ``delay`` seconds later when given."""
        pairs = []
        for target in targets:
            kind = "step" if isinstance(target, Step) else "event" if isinstance(target, Event) else ""
            pairs.append((kind, _name_of(target, "an association's target")))
        self._flow.add_assoc(_name_of(event, "an association's event"), pairs, float(delay))

    def trigger_event(self, event, sequence=None, db=None):
        """Fires ``event`` in ``sequence`` (default 0) when the run starts; from inside one of
        its steps, in the running run."""
        task = current_task()
        if task is not None and task.run_id == self.run_id:
            return task.trigger_event(event, "0" if sequence is None else sequence)
        self._flow.trigger_event(_name_of(event, "the event"), "0" if sequence is None else str(sequence))

    def count_todos(self, sequence=None, with_delayeds=True):
        """How much of the run is left to do: its tasks ready or active (in ``sequence``
        when given), as the original counts them; with ``with_delayeds`` (the original's
        default) its delays not yet fired too, as a pair ``(count, None)``. From inside a step the run's coordinator answers;
        after ``run`` it is read from the store."""
        task = current_task()
        if task is not None and task.run_id == self.run_id:
            status = _eventor.task_run_status()
        else:
            status = self._flow.status_json()
        status = json.loads(status)
        wanted = None if sequence is None else str(sequence)
        todo = sum(1 for t in status["tasks"] if t["status"] in ("ready", "active")
                   and (wanted is None or t["sequence"] == wanted))
        if not with_delayeds:
            return todo
        return (todo + status.get("pending_delays", 0), None)

    def get_step(self, name):
        return self._steps.get(name)

    def get_event(self, name):
        return self._events.get(name)

    def run(self, max_loops=-1):
        """Runs the flow; True when it succeeded. ``outcome`` says how it ended (success,
        failure, incomplete, interrupted) and ``outcome_text`` why."""
        try:
            self.outcome, self.outcome_text = self._flow.run(int(max_loops))
        finally:
            self._run_id = self._flow.run_id  # a recover or continue found the stored run
        self._logger.info("Processing finished with: %s", self.outcome)
        return self.outcome == "success"

    def close(self):
        """Releases the store; the flow cannot run again."""
        self._flow.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
