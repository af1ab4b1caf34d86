"""Resource pools from ``eventor.virtual_resource_pool`` hold their limit."""

import json
import time

import pytest

import eventor as evr
from conftest import query
from eventor.virtual_resource_pool import Resource, ResourcePool


def most_at_once(spans):
    """The most spans ``(start, end)`` overlapping at one moment."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


@pytest.mark.parametrize("construct,shared", [("process", False), ("invoke", False), ("process", True)])
def test_a_pool_of_2_runs_at_most_2_steps_at_once(store, tmp_path, construct, shared):
    pool = ResourcePool("rp1", resource_cls=Resource, policy={"resource_limit": 2}, shared=shared).load()
    ev = evr.Eventor(name="pool", store=store, config={"task_construct": construct})
    start = ev.add_event("start")

    def work():
        began = time.time()
        time.sleep(0.2)
        return [began, time.time()]

    steps = [ev.add_step("s%d" % i, func=work, acquires=[(pool, 1)]) for i in range(6)]
    ev.add_assoc(start, *steps)
    ev.trigger_event(start, 1)
    assert ev.run()
    spans = [json.loads(r) for (r,) in query(store, "SELECT result FROM tasks")]
    assert len(spans) == 6
    assert most_at_once(spans) == 2


def test_asking_more_than_a_pool_holds_is_refused(store):
    pool = ResourcePool("small", policy={"resource_limit": 1}).load()
    ev = evr.Eventor(name="toomuch", store=store)
    start = ev.add_event("start")
    ev.add_assoc(start, ev.add_step("s1", func="true", acquires=[(pool, 2)]))
    ev.trigger_event(start, 1)
    with pytest.raises(ValueError, match="small"):
        ev.run()


def test_a_pool_limit_must_be_positive():
    with pytest.raises(ValueError, match="resource_limit"):
        ResourcePool("p", policy={"resource_limit": 0})
