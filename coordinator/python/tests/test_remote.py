"""Python steps pinned to a test host: the prime starts this same script there (the test
bed's hosts share this machine's file system, so the script and the interpreter are at the
same paths), and the step's result comes back into the prime's store.

Needs the SSH test bed (`scripts/testbed.sh up`, which `scripts/test.sh` runs): skipped
when it is not up, failed instead under ``EVENTOR_REQUIRE_TESTBED=1``.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import tasks


def bed_vars():
    """The test bed's variables (its ``env`` file, as the end-to-end tests read it)."""
    folder = os.environ.get("EVENTOR_TESTBED_DIR", "/tmp/eventor-testbed")
    try:
        with open(os.path.join(folder, "env")) as env:
            lines = env.read().splitlines()
    except OSError:
        lines = []
    pairs = (line[len("export "):].split("=", 1) for line in lines if line.startswith("export "))
    found = {key: value.strip("'") for key, value in pairs}
    if found.get("EVENTOR_SSH_CONFIG"):
        return found
    if os.environ.get("EVENTOR_REQUIRE_TESTBED") == "1":
        pytest.fail("the test bed is not up: run scripts/testbed.sh up")
    pytest.skip("the SSH test bed is not up (scripts/testbed.sh up)")


# The program under test: it builds the same flow on the prime and, started by the prime,
# on node1, where run() serves the pinned step.
PROGRAM = """
import json, os, sys
import eventor as evr

def where():
    return {"ssh": os.environ.get("SSH_CONNECTION", ""), "pid": os.getpid()}

ev = evr.Eventor(name="remote", store=STORE, hosts=HOSTS, config={"task_construct": CONSTRUCT})
start = ev.add_event("start")
ev.add_assoc(start, ev.add_step("far", func=where, host="node1"),
             ev.add_step("near", func=where))
ev.trigger_event(start, 1)
try:
    ok, error = ev.run(), None
except RuntimeError as e:  # the hosts could not be reached
    ok, error = False, str(e)
if os.environ.get("EVENTOR_PROGRAM_PRIME") == "1":
    print(json.dumps({"ok": ok, "error": error, "outcome": ev.outcome_text, "run_id": ev.run_id,
                      "pid": os.getpid()}))
"""


def run_program(tmp_path, hosts_text, construct="invoke"):
    """Runs the program as the prime; its summary and its store."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(hosts_text)
    store = str(tmp_path / "remote.run.db")
    script = tmp_path / "program.py"
    script.write_text("STORE, HOSTS, CONSTRUCT = %r, %r, %r\n" % (store, str(hosts), construct)
                      + textwrap.dedent(PROGRAM))
    env = dict(os.environ, EVENTOR_PROGRAM_PRIME="1")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), store, done.stderr


@pytest.mark.parametrize("construct", ["invoke", "process"])
def test_a_step_pinned_to_node1_runs_there_in_this_script_and_its_result_is_stored(tmp_path, construct):
    bed = bed_vars()
    summary, store, stderr = run_program(
        tmp_path, "ssh_config: %s\nhosts:\n  node1: {}\n" % bed["EVENTOR_SSH_CONFIG"], construct)
    assert summary["ok"], (summary, stderr)
    stored = tasks(store, summary["run_id"])
    (far_status, far, _), (near_status, near, _) = stored[("far", "1")], stored[("near", "1")]
    assert (far_status, near_status) == ("success", "success")
    far, near = json.loads(far), json.loads(near)
    # sshd on node1 started it: the connection's server end is node1's address.
    assert far["ssh"].split()[2] == bed["EVENTOR_NODE1_ADDR"], far
    assert far["pid"] != summary["pid"]
    if construct == "invoke":
        assert near["pid"] == summary["pid"], "the local step ran in the prime"


def test_a_missing_interpreter_on_the_host_stops_the_run_naming_the_host_and_path(tmp_path):
    bed = bed_vars()
    missing = "/nonexistent/eventor/python3"
    hosts = "ssh_config: %s\nhosts:\n  node1: {python: %s}\n" % (bed["EVENTOR_SSH_CONFIG"], missing)
    summary, _, _ = run_program(tmp_path, hosts)
    assert not summary["ok"]
    assert "node1: no Python interpreter at %s" % missing in summary["error"], summary
