"""The original's API calls, each doing what the original's README says."""

import os
import threading
import time

import pytest

import eventor as evr
from conftest import tasks


def chain(ev, names, func):
    """Steps ``names`` in a chain: each one's success fires the next one's event."""
    events = [ev.add_event("run_" + n) for n in names]
    for i, name in enumerate(names):
        after = {evr.STEP_SUCCESS: (events[i + 1],)} if i + 1 < len(names) else {}
        ev.add_assoc(events[i], ev.add_step(name, func=func, triggers=after))
    return events


def test_constants_are_the_originals():
    assert evr.STEP_SUCCESS is evr.StepStatus.success and evr.STEP_COMPLETE is evr.StepStatus.complete
    assert evr.STEP_READY is evr.StepStatus.ready and evr.STEP_ACTIVE is evr.StepStatus.active
    assert evr.STEP_FAILURE is evr.StepStatus.failure
    assert evr.STEP_RERUN is evr.StepReplay.rerun and evr.STEP_SKIP is evr.StepReplay.skip
    assert {evr.RUN_RESTART, evr.RUN_RECOVER, evr.RUN_CONTINUE} == set(evr.RunMode)


def test_run_id_is_the_given_one_or_generated(store):
    assert evr.Eventor(name="f", store=store, run_id="mine").run_id == "mine"
    generated = evr.Eventor(name="f", store=store).run_id
    assert generated and generated != "mine"


def test_name_defaults_to_the_program(store):
    assert evr.Eventor(store=store).name


def test_a_chain_runs_in_order_and_run_says_true(store):
    seen = []
    ev = evr.Eventor(name="chain", store=store, config={"task_construct": "invoke"})
    events = chain(ev, ["s1", "s2", "s3"], lambda: seen.append(evr.current_task().step) or len(seen))
    ev.trigger_event(events[0], 1)
    assert ev.run() is True and ev.outcome == "success"
    assert seen == ["s1", "s2", "s3"]
    assert tasks(store, ev.run_id)[("s3", "1")] == ("success", "3", None)


def test_trigger_event_defaults_to_sequence_0(store):
    ev = evr.Eventor(name="seq", store=store, config={"task_construct": "invoke"})
    events = chain(ev, ["s1"], lambda: evr.current_task().sequence)
    ev.trigger_event(events[0])
    assert ev.run()
    assert tasks(store, ev.run_id) == {("s1", "0"): ("success", '"0"', None)}


def test_get_step_and_get_event_return_what_add_gave(store):
    ev = evr.Eventor(name="get", store=store)
    event, step = ev.add_event("e"), ev.add_step("s")
    assert ev.get_event("e") is event and ev.get_step("s") is step
    assert ev.get_step("e") is None and ev.get_event("nothing") is None


def test_a_tuple_is_and_a_list_is_or(store):
    ev = evr.Eventor(name="expr", store=store, config={"task_construct": "invoke"})
    a, b, c = ev.add_event("a"), ev.add_event("b"), ev.add_event("c")
    both = ev.add_event("both", expr=(a, b))
    either = ev.add_event("either", expr=[c, (a, c)])
    nested = ev.add_event("nested", expr=(a, [b, c]))
    for event in (both, either, nested):
        ev.add_assoc(event, ev.add_step("on_" + event.name, func=lambda: True))
    ev.trigger_event(a, 1)
    ev.trigger_event(b, 1)
    ev.trigger_event(c, 2)
    ev.trigger_event(a, 3)
    assert ev.run()
    assert set(tasks(store, ev.run_id)) == {("on_both", "1"), ("on_nested", "1"), ("on_either", "2")}


def test_a_command_step_sees_its_eventor_variables(store, tmp_path):
    out = tmp_path / "env.txt"
    ev = evr.Eventor(name="cmd", store=store)
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func='echo "$EVENTOR_STEP_NAME $EVENTOR_STEP_SEQUENCE $EVENTOR_STEP_RECOVERY" > %s' % out))
    ev.trigger_event(start, 7)
    assert ev.run()
    assert out.read_text().split() == ["s1", "7", "0"]


def test_a_failed_command_fails_the_run(store):
    ev = evr.Eventor(name="cmdfail", store=store)
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func="exit 3"))
    ev.trigger_event(start, 1)
    assert ev.run() is False and ev.outcome == "failure"


def test_a_failure_trigger_handles_the_failure(store):
    ev = evr.Eventor(name="handled", store=store, config={"task_construct": "invoke"})
    start, failed = ev.add_event("start"), ev.add_event("failed")
    ev.add_assoc(start, ev.add_step("s1", func=lambda: 1 / 0, triggers={evr.STEP_FAILURE: (failed,)}))
    ev.add_assoc(failed, ev.add_step("cleanup", func=lambda: "cleaned"))
    ev.trigger_event(start, 1)
    assert ev.run()
    assert tasks(store, ev.run_id)[("cleanup", "1")][0] == "success"


def test_stop_on_exception_false_goes_on_after_a_failure(store):
    ev = evr.Eventor(name="goon", store=store, config={"task_construct": "invoke"})
    start, done = ev.add_event("start"), ev.add_event("done")
    ev.add_assoc(start, ev.add_step("bad", func=lambda: 1 / 0, config={"stop_on_exception": False}),
                 ev.add_step("good", func=lambda: 1, triggers={evr.STEP_SUCCESS: (done,)}))
    ev.add_assoc(done, ev.add_step("after", func=lambda: 2))
    ev.trigger_event(start, 1)
    assert ev.run() is False
    assert tasks(store, ev.run_id)[("after", "1")][0] == "success"


def test_a_delay_leaves_one_loop_incomplete_until_continue(store):
    ev = evr.Eventor(name="delay", store=store, run_id="d1", config={"task_construct": "invoke"})
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("later", func=lambda: 1), delay=0.5)
    ev.trigger_event(start, 1)
    assert ev.run(max_loops=1) is False and ev.outcome == "incomplete"
    ev.close()
    time.sleep(0.6)
    again = evr.Eventor(name="delay", store=store, run_id="d1", run_mode=evr.RUN_CONTINUE,
                        config={"task_construct": "invoke"})
    again.add_assoc(again.add_event("start"), again.add_step("later", func=lambda: 1), delay=0.5)
    assert again.run(max_loops=1) and again.outcome == "success"


def test_run_releases_the_gil(store):
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.01)

    ev = evr.Eventor(name="gil", store=store)
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("wait", func="sleep 0.5"))
    ev.trigger_event(start, 1)
    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        assert ev.run()
    finally:
        stop.set()
        thread.join()
    assert len(ticks) >= 10


def test_max_concurrent_of_a_step_is_held(store, tmp_path):
    ev = evr.Eventor(name="limit", store=store, config={"task_construct": "invoke"})
    start = ev.add_event("start")
    running, most = [0], [0]
    lock = threading.Lock()

    def work():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1

    ev.add_assoc(start, ev.add_step("s", func=work, config={"max_concurrent": 2}))
    for seq in range(6):
        ev.trigger_event(start, seq)
    assert ev.run()
    assert most[0] == 2


def test_config_file_is_loaded_as_config_loads_it(store, tmp_path):
    path = tmp_path / "eventor.yaml"
    path.write_text("EVENTOR:\n  max_concurrent: 1\n  stop_on_exception: True\n"
                    "  DATABASES:\n    mine: {dialect: sqlite, database: %s}\n" % store)
    ev = evr.Eventor(name="conf", store="mine", config=str(path))
    assert ev.store.endswith("flow.run.db")


def test_a_config_tag_selects_the_section(store, tmp_path):
    path = tmp_path / "eventor.yaml"
    path.write_text("OTHER:\n  max_concurrent: nonsense\nMINE:\n  max_concurrent: 2\n")
    evr.Eventor(name="tag", store=store, config=str(path), config_tag="MINE")
    with pytest.raises(ValueError, match="max_concurrent"):
        evr.Eventor(name="tag", store=store, config=str(path), config_tag="OTHER")


def test_a_bad_config_dict_raises_value_error(store):
    with pytest.raises(ValueError, match="stop_on_exception"):
        evr.Eventor(name="bad", store=store, config={"stop_on_exception": "maybe"})


def test_bad_flows_raise_value_error_and_store_nothing(tmp_path):
    store = str(tmp_path / "never.db")
    ev = evr.Eventor(name="bad", store=store)
    ev.add_event("start")
    with pytest.raises(ValueError):
        ev.add_step("s1", func="true", config={"no_such_key": 1})
    ev.add_step("s1", func="true")
    with pytest.raises(ValueError):
        ev.add_step("s1", func="true")
    with pytest.raises(ValueError):
        ev.trigger_event("no_such_event", 1)
    ev.add_assoc("start", "no_such_step")
    ev.trigger_event("start", 1)
    with pytest.raises(ValueError, match="no_such_step"):
        ev.run()
    assert not os.path.exists(store)


def test_close_ends_the_eventor(store):
    ev = evr.Eventor(name="closed", store=store)
    ev.add_event("start")
    ev.close()
    with pytest.raises((ValueError, RuntimeError), match="closed"):
        ev.run()


def test_the_logging_level_of_a_config_file_is_the_flows(store, tmp_path):
    path = tmp_path / "eventor.yaml"
    path.write_text("EVENTOR:\n  LOGGING:\n    logging_level: 30\n")
    assert evr.Eventor(name="quiet", store=store, config=str(path))._logger.level == 30
    assert evr.Eventor(name="loud", store=store)._logger.level == 20


def test_recovery_run_recovers_from_that_recovery(store):
    def flow(mode, recovery_run=None, fail=False):
        ev = evr.Eventor(name="rr", store=store, run_id="rr", run_mode=mode,
                         recovery_run=recovery_run, config={"task_construct": "invoke"})
        start = ev.add_event("start")
        ev.add_assoc(start, ev.add_step("s1", func=lambda: 1 / 0 if fail else 1))
        ev.trigger_event(start, 1)
        return ev

    assert flow(evr.RUN_RESTART, fail=True).run() is False
    assert flow(evr.RUN_RECOVER).run() is True
    # From recovery 0 (where s1 failed), s1 runs again; from recovery 1 it would be skipped.
    again = flow(evr.RUN_RECOVER, recovery_run=0)
    assert again.run()
    assert tasks(store, "rr")[("s1", "1")][0] == "success"
    again.close()  # else it holds the run: a second coordinator is refused
    latest = flow(evr.RUN_RECOVER)
    assert latest.run()
    assert tasks(store, "rr")[("s1", "1")][0] == "skipped"


@pytest.mark.parametrize("delay", [-1, float("nan"), 1e300])
def test_a_delay_that_is_no_number_of_seconds_is_refused(store, delay):
    ev = evr.Eventor(name="d", store=store)
    start = ev.add_event("start")
    with pytest.raises(ValueError, match="delay"):
        ev.add_assoc(start, ev.add_step("s1", func="true"), delay=delay)


@pytest.mark.parametrize("timeout", [0, -1, 1e300, "1"])
def test_a_timeout_that_is_no_number_of_seconds_is_refused(store, timeout):
    ev = evr.Eventor(name="t", store=store)
    with pytest.raises(ValueError, match="timeout"):
        ev.add_step("s1", func="true", config={"timeout": timeout})


def test_task_construct_of_a_config_file_is_the_default_construct(store, tmp_path):
    path = tmp_path / "eventor.yaml"
    path.write_text("EVENTOR:\n  task_construct: invoke\n")
    ev = evr.Eventor(name="tc", store=store, config=str(path))
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func=os.getpid))
    ev.trigger_event(start, 1)
    assert ev.run()
    assert tasks(store, ev.run_id)[("s1", "1")][1] == str(os.getpid())


def test_the_originals_positional_order_is_kept(store):
    ev = evr.Eventor("pos", store, evr.RUN_RESTART, None, None, [], "given")
    assert ev.run_id == "given"
    start = ev.add_event("start")
    step = ev.add_step("s1", "true", (), {}, {}, None, [], None, {}, {"stop_on_exception": True})
    ev.add_assoc(start, step)
    ev.trigger_event(start, 1)
    assert ev.run()


def test_a_step_host_needs_a_hosts_file_that_names_it(store, tmp_path):
    with pytest.raises(ValueError, match="hosts file"):
        evr.Eventor(name="h", store=store, host="elsewhere")
    with pytest.raises(ValueError, match="no hosts file"):
        evr.Eventor(name="h", store=store).add_step("s1", func="true", host="elsewhere")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  node1: {}\n")
    ev = evr.Eventor(name="h", store=store, hosts=str(hosts))
    with pytest.raises(ValueError, match="unknown host elsewhere"):
        ev.add_step("s1", func="true", host="elsewhere")
    ev.add_step("s2", func="true", hosts=["node1"])


def test_a_hosts_file_python_must_be_an_absolute_path(store, tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  node1: {python: python3}\n")
    with pytest.raises(ValueError, match="python: must be an absolute path"):
        evr.Eventor(name="h", store=store, hosts=str(hosts))


def test_an_original_setting_in_a_step_config_is_warned_of(store, caplog):
    ev = evr.Eventor(name="w", store=store)
    ev.add_step("s1", func="true", config={"sleep_between_loops": 1})
    assert "config sleep_between_loops has no effect here" in caplog.text
