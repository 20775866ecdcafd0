"""The work loop in the daemon: brief, report, status, kill and harvest (docs/work.md).

Briefing (a workspace, a clone, the brief envelope) is the ``Briefing`` mixin
(netskyd.work.briefing); the rest is here.

``WorkLoop`` is built by the wiring with only what it uses: the settings in force, the git
port, the work records (meta.db), the Recorder, the constellation (the ``Crew`` port: add a
briefed clone, wait for it, end it) and the agents' state (``AgentView``). Envelopes go
through the bus's send side (``netsky_shared.maildir``), so a brief waits in the clone's
inbox like any message until the clone can take it.

Journal events: ``work.briefed`` (agent, workspace, branch, base, dispatch),
``work.reported`` (agent, head, ahead, done), ``work.killed`` (agent, removed),
``work.harvested`` (workspace, outcome, onto, commits, reason).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import anyio

from netsky_shared.errors import (
    EnvelopeRejected,
    GitError,
    HarvestRefused,
    NetskyError,
    UnknownClone,
)
from netsky_shared.ids import ROOT, agent_n, is_agent_id, rfc3339
from netsky_shared.maildir import new_envelope, now_rfc3339, send
from netsky_shared.paths import Paths
from netskyd.ports import AgentView, Clock, Crew, SettingsView
from netskyd.store.recorder import Recorder
from netskyd.store.work import OPEN, WorkRecords
from netskyd.work import workspaces as ws
from netskyd.work.briefing import Briefing
from netskyd.work.git import Git
from netskyd.work.harvest import Request, harvest
from netskyd.work.names import workspace_name


class WorkLoop(Briefing):
    """Briefs into workspaces, reports from clones, harvests onto the target branch."""

    def __init__(
        self,
        *,
        settings: SettingsView,
        git: Git,
        records: WorkRecords,
        recorder: Recorder,
        crew: Crew,
        agents: AgentView,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.git = git
        self.records = records
        self.recorder = recorder
        self.crew = crew
        self.agents = agents
        self.clock = clock
        #: One brief at a time: slot allocation and the clone into a new workspace.
        self._brief_lock = anyio.Lock()
        #: One harvest at a time per target repository (they move its branch).
        self._harvest_locks: dict[str, anyio.Lock] = {}

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    async def recover(self) -> int:
        """At start: a harvest a killed daemon left ``running`` is recorded ``failed``
        (``interrupted``), its scratch worktrees removed and their git bookkeeping pruned,
        its private ref deleted. Its target branch moved only if the daemon died after the
        landing's one atomic step (``merge --ff-only`` / ``update-ref``); the reason says
        to look. Returns how many were recovered."""
        rows = [r for r in await self.records.harvests(limit=1000) if r["outcome"] == "running"]
        scratch = self.paths.workspaces / ".harvest"
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))
        for r in rows:
            target = Path(r["target_repo"])
            await self.git.probe("worktree", "prune", cwd=target)
            await self.git.probe("update-ref", "-d", f"refs/netsky/harvest/{r['workspace']}",
                                 cwd=target)
            await self.records.finish_harvest(
                r["id"],
                finished_ts=now_rfc3339(),
                outcome="failed",
                reason="interrupted: netskyd stopped during the harvest; nothing moved the "
                f"branch unless it had landed (git -C {target} log {r['onto']})",
            )
            await self.recorder.event(
                "work.harvested", level="warning", workspace=r["workspace"], outcome="failed",
                onto=r["onto"], commits=0, reason="interrupted", harvest=r["id"],
            )  # fmt: skip
        return len(rows)

    # ----- report --------------------------------------------------------------------------

    async def report(
        self, agent: str, text: str, *, sha: str | None = None, done: bool = False
    ) -> dict[str, Any]:
        """``agent`` (a clone) reports: a ``report`` envelope to agent0 naming the workspace,
        branch, head and commits ahead of the base; the dispatch becomes ``reported`` (or
        ``done``). Returns ``{"dispatch": DispatchRow, "envelope": id}``. Raises
        UnknownClone (no open brief), GitError (``sha`` names no commit there)."""
        d = await self._open_dispatch(agent)
        repo = Path(d["repo"])
        head = await ws.head_of(self.git, repo, sha or "HEAD")
        n = await ws.ahead(self.git, repo, d["base_sha"], head)
        state = "done" if done else "reported"
        body = (
            f"report from {agent} ({state}): workspace {d['workspace']}, branch {d['branch']}, "
            f"head {head[:12]}, {n} commit{'' if n == 1 else 's'} ahead of {d['base']} "
            f"({d['base_sha'][:12]}).\n{text.strip()}\n"
            f"Harvest with: netskyctl harvest {agent_n(agent)}"
        )
        envelope = new_envelope(agent, ROOT, body, kind="report")
        s = self.settings()
        await anyio.to_thread.run_sync(
            lambda: send(s.paths, envelope, envelope_max_bytes=max(s.envelope_max_bytes, 1 << 20))
        )
        now = now_rfc3339()
        await self.records.update_dispatch(
            d["id"],
            state=state,
            state_ts=now,
            head_sha=head,
            ahead=n,
            report=text.strip()[:4000],
            reported_ts=now,
        )
        await self.recorder.event(
            "work.reported", agent=agent, head=head, ahead=n, done=done, dispatch=d["id"]
        )
        row = await self.records.dispatch(d["id"])
        return {"dispatch": self._row(row or {}), "envelope": envelope["id"]}

    async def _open_dispatch(self, agent: str) -> dict[str, Any]:
        if not is_agent_id(agent):
            raise UnknownClone(f"not an agent id: {agent!r}")
        found = await self.records.dispatches(agent=agent, open_only=True)
        if not found:
            raise UnknownClone(f"{agent} holds no brief (netskyctl clone ls)")
        return found[0]

    # ----- status, kill --------------------------------------------------------------------

    async def status(self, agent: str | None = None, *, every: bool = False) -> dict[str, Any]:
        """``{"clones": [DispatchRow]}``: the open dispatches (``every``: all, newest
        first), or ``agent``'s latest. Raises UnknownClone when ``agent`` has none."""
        if agent is not None:
            found = await self.records.dispatches(agent=agent)
            if not found:
                raise UnknownClone(f"{agent} was never briefed")
            return {"clones": [self._row(found[0])]}
        rows = await self.records.dispatches(open_only=not every)
        return {"clones": [self._row(r) for r in rows]}

    async def kill(self, agent: str, *, rm: bool = False, force: bool = False) -> dict[str, Any]:
        """End ``agent`` (it leaves the desired set) and close its brief; with ``rm`` also
        remove its workspace, unless it holds commits never harvested (``force`` removes
        them too) or another open brief shares it. Returns ``{"agent", "killed",
        "dispatch", "removed"}``. Raises UnknownClone, HarvestRefused (unharvested work)."""
        found = await self.records.dispatches(agent=agent)
        if not found:
            raise UnknownClone(f"{agent} was never briefed")
        d = found[0]
        if rm:
            await self._check_removable(d, force)
        killed = await self.crew.kill(agent)
        if d["state"] in OPEN:
            await self.records.update_dispatch(d["id"], state="killed", state_ts=now_rfc3339())
        removed = False
        if rm:
            removed = await anyio.to_thread.run_sync(
                ws.remove, self.paths.workspaces, d["workspace"]
            )
        await self.recorder.event("work.killed", agent=agent, removed=removed, dispatch=d["id"])
        row = await self.records.dispatch(d["id"])
        return {
            "agent": agent,
            "killed": bool(killed.get("killed")),
            "dispatch": self._row(row or {}),
            "removed": removed,
        }

    async def _check_removable(self, d: dict[str, Any], force: bool) -> None:
        sharing = [
            o["agent"]
            for o in await self.records.dispatches(workspace=d["workspace"], open_only=True)
            if o["agent"] != d["agent"]
        ]
        if sharing:
            raise HarvestRefused(
                f"workspace {d['workspace']} is shared with {', '.join(sharing)}: not removed"
            )
        if force:
            return
        unharvested = await self.unharvested(d)
        if unharvested:
            raise HarvestRefused(
                f"workspace {d['workspace']} has {unharvested} commit(s) never harvested: "
                f"netskyctl harvest {agent_n(d['agent'])}, or --force to remove them"
            )

    async def unharvested(self, d: dict[str, Any]) -> int:
        """Commits on the workspace's branch after the last harvest (or the base); 0 when
        the workspace is gone."""
        repo = Path(d["repo"])
        if not await anyio.to_thread.run_sync((repo / ".git").exists):
            return 0
        try:
            tip = await ws.head_of(self.git, repo, f"refs/heads/{d['branch']}")
            return await ws.ahead(self.git, repo, d["harvested_sha"] or d["base_sha"], tip)
        except GitError:
            return 0

    # ----- harvest -------------------------------------------------------------------------

    async def harvest(
        self,
        target: str,
        *,
        onto: str | None = None,
        check: str | None = None,
        push: bool = True,
    ) -> dict[str, Any]:
        """Harvest the clone ``target`` (``agentN``) or workspace ``target`` onto ``onto``
        (default: the branch it was briefed from) behind ``check`` (default the
        ``check_command`` setting); netskyd.work.harvest does the git. Records a
        ``harvests`` row, sends a ``harvest`` envelope to agent0 and the clone. Returns
        ``HarvestResult`` (docs/protocol.md). Raises UnknownClone, HarvestRefused."""
        d = await self._dispatch_for(target)
        s = self.settings()
        onto = onto or d["base"]
        check = check if check is not None else s.check_command
        harvest_id = f"{rfc3339(self.clock(), digits=0).replace(':', '')}-{d['workspace']}"
        row_id = await self.records.add_harvest(
            {
                "ts": now_rfc3339(),
                "dispatch_id": d["id"],
                "agent": d["agent"],
                "workspace": d["workspace"],
                "target_repo": d["source_repo"],
                "onto": onto,
                "outcome": "running",
            }
        )
        req = Request(
            harvest_id=f"{row_id}-{d['workspace']}",
            name=d["workspace"],
            scratch=s.paths.workspaces / ".harvest" / harvest_id,
            workspace_repo=Path(d["repo"]),
            branch=d["branch"],
            base_sha=d["harvested_sha"] or d["base_sha"],
            target=Path(d["source_repo"]),
            onto=onto,
            check=check or None,
            check_timeout_s=s.check_timeout_s,
            log_path=s.paths.harvest_logs / f"{row_id}.log",
            push=push and s.harvest_push,
        )
        lock = self._harvest_locks.setdefault(d["source_repo"], anyio.Lock())
        try:
            async with lock:
                out = await harvest(self.git, req)
        except (HarvestRefused, GitError) as e:
            outcome = "refused" if isinstance(e, HarvestRefused) else "failed"
            await self.records.finish_harvest(
                row_id, finished_ts=now_rfc3339(), outcome=outcome, reason=str(e)
            )
            await self.recorder.event(
                "work.harvested", level="warning", workspace=d["workspace"], outcome=outcome,
                onto=onto, commits=0, reason=str(e), harvest=row_id,
            )  # fmt: skip
            raise
        await self.records.finish_harvest(
            row_id,
            finished_ts=now_rfc3339(),
            onto_before=out.onto_before,
            onto_after=out.onto_after,
            source_tip=out.source_tip,
            commits=out.commits,
            check_command=check or None,
            check_exit=out.check_exit,
            check_s=out.check_s,
            log_path=out.log_path,
            pushed=out.pushed,
            outcome=out.outcome,
            reason=out.reason,
        )
        if out.outcome == "landed":
            fields: dict[str, Any] = {"harvested_sha": out.source_tip}
            if d["state"] == "done":
                fields.update(state="harvested", state_ts=now_rfc3339())
            await self.records.update_dispatch(d["id"], **fields)
        await self.recorder.event(
            "work.harvested",
            level="info" if out.outcome == "landed" else "warning",
            workspace=d["workspace"],
            outcome=out.outcome,
            onto=onto,
            commits=out.commits,
            reason=out.reason,
            harvest=row_id,
        )
        text = harvest_text(d, out.outcome, onto, out.commits, out.onto_after, out.reason)
        await self._tell([ROOT, d["agent"]], text)
        return {
            "harvest": row_id,
            "outcome": out.outcome,
            "agent": d["agent"],
            "workspace": d["workspace"],
            "onto": onto,
            "onto_before": out.onto_before,
            "onto_after": out.onto_after,
            "commits": out.commits,
            "check": check or None,
            "check_exit": out.check_exit,
            "log": out.log_path,
            "pushed": out.pushed,
            "reason": out.reason,
            "conflicts": out.conflicts,
            "remove_with": f"netskyctl clone kill {agent_n(d['agent'])} --rm",
        }

    async def _dispatch_for(self, target: str) -> dict[str, Any]:
        """The dispatch a harvest means: the clone's latest (``agentN`` or ``N``), else the
        workspace's latest. Raises UnknownClone."""
        agent = f"agent{target}" if target.isdigit() else target
        if is_agent_id(agent):
            found = await self.records.dispatches(agent=agent)
            if found:
                return found[0]
        try:
            name = workspace_name(target)
        except ValueError:
            name = ""
        found = await self.records.dispatches(workspace=name) if name else []
        if not found:
            raise UnknownClone(f"{target!r} is neither a briefed clone nor a workspace")
        return found[0]

    async def _tell(self, agents: list[str], text: str) -> None:
        """A ``harvest`` envelope from ``netsky`` to each of ``agents``; a full inbox is
        journalled, never fatal (the harvest already happened)."""
        s = self.settings()
        for agent in dict.fromkeys(agents):
            try:
                envelope = new_envelope("netsky", agent, text, kind="harvest")
                await anyio.to_thread.run_sync(_send, s.paths, envelope, s.inbox_max_pending)
            except (NetskyError, EnvelopeRejected, ValueError, OSError) as e:
                await self.recorder.event(
                    "work.tell_failed", level="warning", agent=agent, error=str(e)
                )

    def _row(self, d: dict[str, Any]) -> dict[str, Any]:
        """A dispatch as the client shows it: the row plus the clone's liveness."""
        st = self.agents.agents.get(d.get("agent", ""))
        return {
            **d,
            "alive": bool(st and st.alive),
            "ready": bool(st and st.ready),
        }


def _send(paths: Paths, envelope: dict[str, Any], inbox_max_pending: int) -> None:
    send(paths, envelope, inbox_max_pending=inbox_max_pending)


def harvest_text(
    d: dict[str, Any],
    outcome: str,
    onto: str,
    commits: int,
    onto_after: str | None,
    reason: str | None,
) -> str:
    """The text of a ``harvest`` envelope to agent0 and the clone."""
    if outcome == "landed":
        head = f"harvested {d['workspace']} ({d['agent']}): {commits} commit"
        head += f"{'' if commits == 1 else 's'} landed on {onto} at {(onto_after or '')[:12]}."
        return head + (f" {reason}" if reason else "")
    return (
        f"harvest of {d['workspace']} ({d['agent']}) onto {onto}: {outcome}; {onto} is "
        f"unchanged. {reason or ''}".strip()
    )
