"""Each task_construct: the result stored as JSON (else its repr), an exception as the
task's failure with its traceback, the task's identity inside the step."""

import os

import pytest

import eventor as evr
from conftest import tasks

CONSTRUCTS = ["invoke", "thread", "process"]


class Opaque:
    def __repr__(self):
        return "<opaque>"


def one_step(store, construct, func, **step):
    ev = evr.Eventor(name="one", store=store, config={"task_construct": construct})
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func=func, **step))
    ev.trigger_event(start, 5)
    ok = ev.run()
    return ok, tasks(store, ev.run_id)[("s1", "5")]


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_the_return_value_is_the_result_as_json(store, construct):
    ok, (status, result, error) = one_step(store, construct, lambda x, y=0: {"sum": x + y},
                                           args=(1,), kwargs={"y": 2})
    assert ok and status == "success" and result == '{"sum":3}' and error is None


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_a_result_that_is_not_json_is_stored_as_its_repr(store, construct):
    ok, (_, result, _) = one_step(store, construct, Opaque)
    assert ok and result == '"<opaque>"'


@pytest.mark.parametrize("construct", ["invoke", "process"])
def test_a_result_holding_nan_is_stored_as_its_repr(store, construct):
    ok, (_, result, _) = one_step(store, construct, lambda: [float("nan")])
    assert ok and result == '"[nan]"'


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_an_exception_fails_the_task_with_its_traceback(store, construct):
    def broken():
        raise KeyError("missing input")

    ok, (status, result, error) = one_step(store, construct, broken)
    assert not ok and status == "failure" and result is None
    assert error.startswith("Traceback") and "in broken" in error and "KeyError: 'missing input'" in error


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_current_task_names_the_step_sequence_and_recovery(store, construct):
    ok, (_, result, _) = one_step(store, construct,
                                  lambda: list(evr.current_task()[2:5]))
    assert ok and result == '["s1","5",0]'


def test_a_process_step_runs_in_a_child_with_eventor_variables(store):
    parent = os.getpid()
    ok, (_, result, _) = one_step(store, "process", lambda: [
        os.getpid() != parent, os.environ["EVENTOR_STEP_NAME"], os.environ["EVENTOR_STEP_SEQUENCE"]])
    assert ok and result == '[true,"s1","5"]'
    assert "EVENTOR_STEP_NAME" not in os.environ


def test_an_invoke_step_runs_in_this_process(store):
    seen = []
    ok, _ = one_step(store, "invoke", lambda: seen.append(os.getpid()))
    assert ok and seen == [os.getpid()]


def test_a_process_step_that_dies_fails_saying_how(store):
    ok, (status, _, error) = one_step(store, "process", lambda: os._exit(9))
    assert not ok and status == "failure" and "exit status 9" in error


def test_process_is_the_default_construct(store):
    ev = evr.Eventor(name="default", store=store)
    start = ev.add_event("start")
    parent = os.getpid()
    ev.add_assoc(start, ev.add_step("s1", func=lambda: os.getpid() != parent))
    ev.trigger_event(start, 1)
    assert ev.run() and tasks(store, ev.run_id)[("s1", "1")][1] == "true"


def test_an_unknown_construct_is_refused(store):
    ev = evr.Eventor(name="unknown", store=store)
    with pytest.raises(ValueError, match="task_construct"):
        ev.add_step("s1", func=print, config={"task_construct": "fiber"})


def test_task_lines_are_logged(store, caplog):
    caplog.set_level("INFO")
    one_step(store, "invoke", lambda: 1)
    text = caplog.text
    assert "[ Task s1/5 ] Attempting to run" in text
    assert "[ Task s1/5 ] Completed, status: success" in text
    assert "Processing finished with: success" in text


def test_a_process_step_past_its_timeout_is_stopped_and_fails(store):
    import time
    began = time.monotonic()
    ok, (status, _, error) = one_step(store, "process", lambda: time.sleep(30),
                                      config={"timeout": 0.3})
    assert not ok and status == "failure" and "timed out after 0.3 s" in error
    assert time.monotonic() - began < 10


def test_a_command_past_its_timeout_fails(store):
    ok, (status, _, _) = one_step(store, "invoke", "sleep 30", config={"timeout": 0.3})
    assert not ok and status == "failure"


@pytest.mark.parametrize("construct", ["invoke", "thread"])
def test_a_timeout_on_an_in_process_step_is_refused(store, construct):
    ev = evr.Eventor(name="t", store=store)
    with pytest.raises(ValueError, match="timeout needs task_construct 'process'"):
        ev.add_step("s1", func=print, config={"timeout": 1, "task_construct": construct})


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_a_step_iterates_a_loop_by_triggering_the_next_sequence(store, construct):
    ev = evr.Eventor(name="loop", store=store, config={"task_construct": construct})
    start = ev.add_event("start")

    def again():
        task = evr.current_task()
        if int(task.sequence) < 3:
            task.trigger_event(start, int(task.sequence) + 1)
        return task.sequence

    ev.add_assoc(start, ev.add_step("s1", func=again))
    ev.trigger_event(start, 1)
    assert ev.run()
    assert sorted(tasks(store, ev.run_id)) == [("s1", "1"), ("s1", "2"), ("s1", "3")]


def test_an_invoked_function_with_an_eventor_parameter_gets_the_flow(store):
    ev = evr.Eventor(name="kw", store=store, config={"task_construct": "invoke"})
    start = ev.add_event("start")

    def again(eventor):
        sequence = int(evr.current_task().sequence)
        if sequence < 2:
            eventor.trigger_event(start, sequence + 1)
        return eventor is ev

    ev.add_assoc(start, ev.add_step("s1", func=again))
    ev.trigger_event(start, 1)
    assert ev.run()
    assert tasks(store, ev.run_id) == {("s1", "1"): ("success", "true", None),
                                       ("s1", "2"): ("success", "true", None)}


@pytest.mark.parametrize("construct", ["invoke", "process"])
def test_sequence_arg_name_and_pass_logger_to_task_give_the_function_its_task(store, construct):
    ev = evr.Eventor(name="args", store=store, config={
        "task_construct": construct, "sequence_arg_name": "seq", "pass_logger_to_task": True})
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func=lambda seq, logger: [seq, logger.name]),
                 ev.add_step("s2", func=lambda: "plain", config={"sequence_arg_name": None,
                                                                 "pass_logger_to_task": False}))
    ev.trigger_event(start, 4)
    assert ev.run()
    stored = tasks(store, ev.run_id)
    assert stored[("s1", "4")][1] == '["4","args.s1_4"]'
    assert stored[("s2", "4")][1] == '"plain"'
