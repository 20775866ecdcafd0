"""The runtimes registry: one module per runtime, each with its command and its screens.

A ``Runtime`` member added without its module (``netskyd/runtimes/<name>.py``) and its
line in ``netskyd.runtimes.RUNTIMES`` fails here, not at the first spawn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import netskyd.config
from netskyd.runtimes import RUNTIMES, screens_for
from netskyd.runtimes.catalogue import CATALOGUE, DIALOGS, Screens
from netskyd.runtimes.names import Runtime

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("runtime", list(Runtime))
def test_every_runtime_has_its_module(runtime: Runtime) -> None:
    module = RUNTIMES.get(runtime)
    assert module is not None, f"no entry for {runtime!r} in netskyd.runtimes.RUNTIMES"
    assert getattr(module, "__name__", None) == f"netskyd.runtimes.{runtime.value}"
    assert callable(getattr(module, "command", None))
    assert isinstance(getattr(module, "SCREENS", None), Screens)
    assert screens_for(runtime) is module.SCREENS
    assert CATALOGUE[runtime] is module.SCREENS


def test_the_registry_names_only_runtimes() -> None:
    assert set(RUNTIMES) == set(Runtime)


def test_each_dialog_belongs_to_the_runtime_whose_module_holds_it() -> None:
    for runtime, module in RUNTIMES.items():
        for spec in module.SCREENS.dialogs:
            assert spec.runtime is runtime, spec.name
            assert spec.name.startswith(f"{runtime.value}."), spec.name
            assert DIALOGS[spec.name] is spec


def test_config_re_exports_the_one_runtime_enum() -> None:
    assert netskyd.config.Runtime is Runtime


def test_the_runtimes_do_not_import_config() -> None:
    """No import cycle: config imports the runtimes; they import it for types only."""
    code = (
        "import sys, json\n"
        "import netskyd.runtimes, netskyd.runtimes.catalogue\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('netskyd'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    loaded = json.loads(res.stdout)
    assert "netskyd.runtimes.catalogue" in loaded
    assert not [m for m in loaded if m.startswith("netskyd.config")]
