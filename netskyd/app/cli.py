"""The ``netskyd`` command: ``netskyd run`` (foreground daemon), ``netskyd demo``, and
``netskyd channel-server`` (an agent's MCP channel, started by Claude Code)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import click

from netsky_shared.errors import ConfigError, DaemonAlreadyRunning
from netskyd import __version__
from netskyd.config import load_settings

EXIT_ALREADY_RUNNING = 1
EXIT_CONFIG = 2


def backend_options() -> dict[str, bool]:
    """anyio backend options: uvloop where it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netskyd")
def main() -> None:
    """netskyd: the netsky supervisor daemon."""


config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="config.toml to read (default: $NETSKY_CONFIG, else $NETSKY_HOME/config.toml).",
)


@main.command()
@config_option
@click.option(
    "--revived-by",
    default=None,
    metavar="WHO",
    help="Say who brought netskyd back after it died (the shim passes 'shim'); the owner "
    "is paged about it. Also NETSKY_REVIVED_BY.",
)
def run(config: Path | None, revived_by: str | None) -> None:
    """Run the daemon in the foreground (what systemd/launchd runs).

    Logs JSON to NETSKY_HOME/logs/netskyd.jsonl and readable lines to stderr.
    Stops on SIGTERM/SIGINT and leaves the agents' tmux sessions running.
    """
    from netskyd import log as logmod
    from netskyd.app.daemon import Daemon

    environ = dict(os.environ)
    if revived_by:
        environ["NETSKY_REVIVED_BY"] = revived_by
    try:
        settings = load_settings(config, environ)
    except ConfigError as e:
        click.echo(f"netskyd: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    logmod.configure(settings.paths.log_file, settings.log_level)
    daemon = Daemon(settings, config_path=config or _env_config(environ), environ=environ)
    try:
        anyio.run(daemon.serve, backend="asyncio", backend_options=backend_options())
    except DaemonAlreadyRunning as e:
        click.echo(f"netskyd: {e}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING)
    except KeyboardInterrupt:
        pass


def _env_config(environ: dict[str, str]) -> Path | None:
    value = environ.get("NETSKY_CONFIG")
    return Path(value) if value else None


@main.command()
@click.option("--clones", default=2, show_default=True, help="Clones in the demo constellation.")
@click.option("--once", is_flag=True, help="Run the tour, stop everything, and exit.")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="NETSKY_HOME of the demo (default: ./.netsky-demo).",
)
def demo(clones: int, once: bool, home: Path | None) -> None:
    """Run the demo constellation: a real daemon, real tmux, demo agents, a guided tour.

    The tour drives the daemon as an operator would, so it is the client's
    (``python -m client.tour``); this command hands over to it with the same options.
    """
    argv = [sys.executable, "-m", "client.tour", "--clones", str(clones)]
    if once:
        argv.append("--once")
    if home is not None:
        argv += ["--home", str(home)]
    os.execv(sys.executable, argv)


@main.command("channel-server")
@click.option("--agent", "agent", required=True, help="Agent whose channel this is (agent3, 3).")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="NETSKY_HOME (default: $NETSKY_HOME, else ~/.netsky).",
)
@config_option
def channel_server(agent: str, home: Path | None, config: Path | None) -> None:
    """Serve AGENT's MCP channel on stdio (Claude Code loads it as its `agent` channel).

    Listens on NETSKY_HOME/state/mcp/<agent>.sock for the daemon's deliveries once
    the MCP session is initialized; exits when stdin closes. stdout is the MCP
    stream, so every log line goes to stderr.
    """
    from netsky_shared.ids import parse_agent
    from netskyd import log as logmod
    from netskyd.bus import channel_server as channel

    try:
        agent_id = parse_agent(agent)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--agent") from e
    environ = dict(os.environ)
    if home is not None:
        environ["NETSKY_HOME"] = str(home)
    try:
        settings = load_settings(config, environ)
    except ConfigError as e:
        click.echo(f"netskyd channel-server: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    logmod.configure(None, settings.log_level)  # stderr only: stdout is the MCP stream
    socket_path = settings.paths.mcp_socket(agent_id)
    try:
        anyio.run(
            channel.serve,
            agent_id,
            socket_path,
            settings.mcp_timeout_s,
            backend="asyncio",
            backend_options=backend_options(),
        )
    except KeyboardInterrupt:
        pass


#: Modules a running daemon imports (directly or late): selftest imports each.
SELFTEST_MODULES = (
    "netskyd.app.daemon",
    "netskyd.control.api",
    "netskyd.control.server",
    "netskyd.supervision.supervisor",
    "netskyd.bus.watcher",
    "netskyd.activity.monitor",
    "netskyd.escalation.spool",
    "netskyd.escalation.legs",
    "netskyd.escalation.direct",
    "netskyd.keepalive.health",
    "netskyd.keepalive.heartbeat",
    "netskyd.keepalive.lkg.snapshot",
    "netskyd.keepalive.lkg.install",
    "netskyd.keepalive.lkg.task",
    "client.netskyctl",
    "client.hook",
)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def selftest(config: Path | None, as_json: bool) -> None:
    """Check that this install can run a daemon: import every module it needs, find the
    bundled prompts, load the settings. Exit 0 when it can, 1 with the reasons.

    The shim asks this of an install before starting it (docs/keepalive.md). Output
    (--json): {"ok": bool, "version", "executable", "checks": [{"name", "ok", "detail"}]}.
    """
    import importlib
    import json

    from netsky_shared.bundled import bundled

    checks: list[dict[str, object]] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            checks.append({"name": name, "ok": True, "detail": fn()})
        except Exception as e:  # noqa: BLE001 - any failure is the answer
            checks.append({"name": name, "ok": False, "detail": f"{type(e).__name__}: {e}"})

    def imports() -> str:
        for name in SELFTEST_MODULES:
            importlib.import_module(name)
        return f"{len(SELFTEST_MODULES)} modules"

    def prompts() -> str:
        base = bundled("prompts") / "base.md"
        if not base.is_file():
            raise FileNotFoundError(f"{base} is missing")
        return str(base.parent)

    def settings() -> str:
        loaded = load_settings(config, dict(os.environ))
        return f"home {loaded.home}"

    check("imports", imports)
    check("prompts", prompts)
    check("settings", settings)
    ok = all(c["ok"] for c in checks)
    if as_json:
        click.echo(
            json.dumps(
                {"ok": ok, "version": __version__, "executable": sys.executable, "checks": checks}
            )
        )
    else:
        for c in checks:
            click.echo(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
        click.echo(f"netskyd {__version__} ({sys.executable}): {'ok' if ok else 'cannot run'}")
    sys.exit(0 if ok else 1)
