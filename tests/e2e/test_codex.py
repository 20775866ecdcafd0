"""End to end with the real Codex CLI: netskyd spawns agent0 on the ``codex`` runtime.

Proves the command line netsky builds (``codex -c developer_instructions=...``) is
accepted by the Codex CLI on the npm registry today, that readiness is seen on its
real screen (the ``›`` composer), and that an envelope lands in its pane. Codex runs
offline: a temporary HOME holds an API-key login and marks the working directory
trusted, and the API base URL (``-c openai_base_url``) is a closed local port.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import EnvNetsky, Netsky, closed_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FAKE_KEY = "sk-netsky-test-" + "y" * 32


@pytest.fixture
def codex_netsky(netsky: Netsky, codex_bin: Path, tmp_path: Path) -> Iterator[EnvNetsky]:
    home = tmp_path / "user-home"
    workdir = (tmp_path / "work").absolute()
    workdir.mkdir()
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text(
        json.dumps({"OPENAI_API_KEY": FAKE_KEY, "auth_mode": "apikey"})
    )
    (home / ".codex" / "config.toml").write_text(
        f'check_for_update_on_startup = false\n[projects."{workdir}"]\ntrust_level = "trusted"\n'
    )
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    ns = EnvNetsky(
        netsky,
        {"HOME": str(home), "OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": base_url},
        strip_prefixes=("OPENAI_", "CODEX_"),
    )
    ns.configure(
        runtime="codex",
        codex_command=str(codex_bin),
        # Codex 0.169 ignores OPENAI_BASE_URL: the config key keeps it on 127.0.0.1.
        # --no-daemon: no background app-server outliving the test.
        codex_args=["--no-daemon", "-c", f'openai_base_url="{base_url}"'],
        clones=0,
        agent_runtimes={"agentinfinity": "demo"},
        ready_timeout_s=90,
        paste_settle_ms=400,
        workdir=str(workdir),
    )
    try:
        yield ns
    finally:
        ns.cleanup()


def test_envelope_reaches_real_codex(codex_netsky: EnvNetsky) -> None:
    ns = codex_netsky
    ns.start()

    def diag() -> str:
        return f"\n--- agent0 pane:\n{ns.pane_text('agent0')}\n--- netskyd:\n{ns.stderr()}"

    try:
        wait_for(
            lambda: ns.agents().get("agent0", {}).get("ready"),
            120,
            "codex agent0 ready",
            step_s=0.5,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}{diag()}") from None
    assert ns.agents()["agent0"]["runtime"] == "codex"
    assert "OpenAI Codex" in ns.pane_text("agent0"), diag()
    sidecar = ns.home / "state" / "prompts" / "agent0.codex.toml"
    assert json.loads(sidecar.read_text()).startswith("# You are agent0")

    text = f"hello codex {uuid.uuid4().hex[:12]}"
    sent = ns.ctl("channel", "send", "agent0", text, "--from", "agent1", "--json")
    assert sent.returncode == 0, sent.stderr
    envelope_id = json.loads(sent.stdout)["id"]
    try:
        wait_for(lambda: text in ns.pane_text("agent0"), 60, "the envelope in codex's pane")
    except AssertionError as e:
        raise AssertionError(f"{e}{diag()}") from None
    delivered = ns.home / "channels/agent/agent0/delivered"
    wait_for(lambda: list(delivered.glob(f"*{envelope_id}.json")), 10, "the ack (delivered/)")

    # Submitted, not half-typed: the text sits above Codex's composer and the composer
    # (the last "›" line) is empty again. A paste whose Enter arrived inside the burst
    # would leave the text in the composer as a newline instead.
    try:
        wait_for(lambda: _submitted(ns.pane_text("agent0"), text), 30, "codex to submit it")
    except AssertionError as e:
        raise AssertionError(f"{e}{diag()}") from None
    # netsky itself saw it taken: recorded consumed, after it was submitted.
    try:
        row = wait_for(lambda: ns.consumed(envelope_id), 30, "the envelope recorded consumed")
    except AssertionError as e:
        raise AssertionError(f"{e}; record {ns.consumption(envelope_id)}{diag()}") from None
    assert row["consumed_at"] >= row["submitted_at"], row
    assert ns.stop() == 0


def _submitted(pane: str, text: str) -> bool:
    lines = pane.splitlines()
    at_text = max((i for i, line in enumerate(lines) if text in line), default=-1)
    composer = max((i for i, line in enumerate(lines) if line.startswith("›")), default=-1)
    return 0 <= at_text < composer and text not in lines[composer]
