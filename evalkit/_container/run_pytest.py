"""Sandbox step 2: run pytest with evalkit's report plugin, immune to module shadowing.

Its instructions arrive on stdin (not in a file or the environment the tests can
read). pytest, the report plugin and the image's trusted plugins are imported, and the
report socket is connected, *before* the checkout joins ``sys.path``, so a patch that
adds ``pytest.py`` or ``evalkit_pytest.py`` cannot replace them. Plugin auto-loading
is off; only plugins recorded when the environment image was built are loaded.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys


def main() -> int:
    config = json.loads(sys.stdin.readline())
    sys.stdin.close()
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import evalkit_pytest
    import pytest

    sys.path.remove(here)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(config["socket"])
    evalkit_pytest.connect(
        sock, config["nonce"], config.get("select", []), os.getcwd(), config.get("patched", [])
    )
    sys.addaudithook(evalkit_pytest.audit_hook)
    plugins: list[object] = [evalkit_pytest]
    trusted = config.get("trusted_plugins", "/etc/evalkit/pytest_plugins.json")
    if os.path.exists(trusted):
        for module in json.load(open(trusted, encoding="utf-8")):
            try:
                plugins.append(importlib.import_module(module))
            except Exception as exc:  # a broken optional plugin must not hide results
                message = "evalkit: could not load pytest plugin %s: %s" % (module, exc)
                print(message, file=sys.stderr)
    # Same import semantics as ``python -m pytest``: the working directory comes first.
    sys.path.insert(0, os.getcwd())
    return int(pytest.main(sys.argv[1:], plugins=plugins))


if __name__ == "__main__":
    raise SystemExit(main())
