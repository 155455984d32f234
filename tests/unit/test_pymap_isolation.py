"""grpclib, pymapadmin and protobuf are loaded only when a pymap host is contacted.

Measured in a fresh interpreter: in this one, other tests may have imported them already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("grpclib", "pymapadmin", "google.protobuf")

PROBE = textwrap.dedent("""
    import importlib, importlib.util, json, sys

    HEAVY = {heavy!r}

    def loaded():
        return sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".")
                                                   for h in HEAVY))

    steps = {{}}
    import mailfleet.drivers
    from mailfleet.drivers import driver_class
    steps["mailfleet.drivers"] = loaded()
    others = []
    for name in ("base", "http", "dovecot", "proxy", "appliance"):
        module = "mailfleet.drivers." + name
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
            others.append(name)
    steps["other drivers"] = loaded()
    import mailfleet_local.peers.pymap
    steps["the pymap peer module"] = loaded()
    from mailfleet.drivers.base import validate_params
    cls = driver_class("pymap")
    for spec in cls.static_actions().values():
        spec.describe()
    validate_params(cls.static_actions()["append"], {{"user": "u", "message": "m"}})
    steps["listing and validating pymap actions"] = loaded()
    try:
        from mailfleet.models.hosts import Credentials, Host
        from mailfleet.drivers.base import Deadline
        host = Host(id="p", kind="pymap", endpoint="unix:///nonexistent/admin.sock")
        cls(host, Credentials(token="t")).perform("ping", {{}}, Deadline.after(5))
    except Exception as exc:
        steps["error"] = type(exc).__name__ + ": " + getattr(exc, "message", "")
    steps["performing a pymap action"] = loaded()
    print(json.dumps({{"others": others, "steps": steps}}))
""")


def test_heavy_modules_load_only_when_a_pymap_host_is_contacted() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    steps = report["steps"]
    print("drivers imported besides pymap:", report["others"])
    for step, modules in steps.items():
        print(f"{step}: {modules if isinstance(modules, str) else len(modules)}")
    for step in (
        "mailfleet.drivers",
        "other drivers",
        "the pymap peer module",
        "listing and validating pymap actions",
    ):
        assert steps[step] == [], f"{step} loaded {steps[step]}"
    # The positive control: a call does load them (the socket is missing: a clean error).
    assert steps["error"].startswith("HostError: the admin socket does not exist")
    contacted = steps["performing a pymap action"]
    for heavy in HEAVY:
        assert heavy in contacted, f"{heavy} not loaded by a pymap call"
