"""Briefing a clone: the ``Briefing`` mixin of ``WorkLoop`` (netskyd.work.loop).

``brief(text, workspace, ...)`` makes the workspace name safe, picks a free clone under
``max_clones``, clones the source into the workspace (netskyd.work.workspaces), records a
``clone_dispatches`` row, adds the clone to the constellation in its workspace (the
``Crew`` port), sends the ``brief`` envelope and waits for readiness (and, with
``wait_s``, for the brief's delivery).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from netsky_shared.errors import ClonesFull, NetskyError
from netsky_shared.ids import ROOT, agent_n
from netsky_shared.maildir import new_envelope, now_rfc3339, send
from netskyd.config import Runtime
from netskyd.work import workspaces as ws
from netskyd.work.names import pick_clone, workspace_name

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.ports import Crew, SettingsView
    from netskyd.store.recorder import Recorder
    from netskyd.store.work import WorkRecords
    from netskyd.work.git import Git

#: How often ``brief --wait`` looks for its envelope in the clone's ``delivered/``.
DELIVERED_POLL_S = 0.1


class Briefing:
    """Brief a clone into a workspace; the host (WorkLoop) provides the attributes below."""

    settings: SettingsView
    git: Git
    records: WorkRecords
    recorder: Recorder
    crew: Crew
    _brief_lock: anyio.Lock

    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def _row(self, d: dict[str, Any]) -> dict[str, Any]: ...

    # ----- brief ---------------------------------------------------------------------------

    async def brief(
        self,
        text: str,
        workspace: str,
        *,
        agent: int | None = None,
        runtime: Runtime | None = None,
        repo: str | None = None,
        base: str | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Brief a clone into ``workspace`` (module docstring; docs/work.md "Brief").

        Returns ``{"dispatch": DispatchRow, "ready": bool, "delivered": bool | None}``
        (``delivered`` None without ``wait_s``). Raises ValueError (a workspace name with
        nothing usable, an empty or oversized brief), ClonesFull (``max_clones`` reached:
        which clones hold the slots), GitError (the source is not a repository, the base
        is unknown, the clone failed), and what spawning raises.
        """
        s = self.settings()
        name = workspace_name(workspace)
        if not text.strip():
            raise ValueError("the brief is empty")
        where = Path(repo) if repo else s.source_repo
        if not where.is_absolute():
            raise ValueError(f"the source repository must be an absolute path, not {repo!r}")
        source = await ws.source_of(self.git, where)
        async with self._brief_lock:
            open_ = await self.records.dispatches(open_only=True)
            clone, why = pick_clone(agent, [int(agent_n(d["agent"])) for d in open_], s.max_clones)
            if clone is None:
                raise ClonesFull(f"no clone can take the brief: {why}")
            space = await ws.create(self.git, source, s.paths.workspaces, name, base, clone)
            rt = runtime or s.runtime_for(clone)
            envelope = new_envelope(
                ROOT, clone, brief_text(clone, space, text, source), kind="brief"
            )
            now = now_rfc3339()
            dispatch_id = await self.records.add_dispatch(
                {
                    "ts": now,
                    "agent": clone,
                    "workspace": name,
                    "source_repo": str(source),
                    "repo": str(space.repo),
                    "branch": space.branch,
                    "base": space.base,
                    "base_sha": space.base_sha,
                    "runtime": rt.value,
                    "brief_envelope": envelope["id"],
                    "brief_bytes": len(text.encode()),
                    "state": "briefed",
                    "state_ts": now,
                }
            )
        await self.recorder.event(
            "work.briefed",
            agent=clone,
            workspace=name,
            branch=space.branch,
            base=space.base,
            base_sha=space.base_sha,
            dispatch=dispatch_id,
            created=space.created,
        )
        work = {
            "workdir": str(space.repo),
            "workspace": name,
            "branch": space.branch,
            "base": space.base,
        }
        try:
            # Wanted first, then the brief: a brief never waits in the inbox of a clone
            # that is not coming (the constellation is down).
            await self.crew.add_agent(clone, runtime, work)
            await anyio.to_thread.run_sync(
                lambda: send(
                    s.paths,
                    envelope,
                    inbox_max_pending=s.inbox_max_pending,
                    envelope_max_bytes=s.envelope_max_bytes,
                )
            )
        except (NetskyError, ValueError) as e:
            await self.records.update_dispatch(
                dispatch_id, state="failed", state_ts=now_rfc3339(), error=str(e)
            )
            raise
        ready = await self.crew.wait_ready([clone], s.ready_timeout_s)
        delivered = await self._wait_delivered(clone, envelope["id"], wait_s) if wait_s else None
        row = await self.records.dispatch(dispatch_id)
        return {"dispatch": self._row(row or {}), "ready": ready, "delivered": delivered}

    async def _wait_delivered(self, agent: str, envelope_id: str, timeout_s: float) -> bool:
        """True once ``envelope_id`` is in ``agent``'s ``delivered/`` (within the deadline)."""
        box = self.paths.channel(agent, "delivered")

        def there() -> bool:
            try:
                return any(envelope_id in p.name for p in box.iterdir())
            except FileNotFoundError:
                return False

        with anyio.move_on_after(timeout_s):
            while True:
                if await anyio.to_thread.run_sync(there):
                    return True
                await anyio.sleep(DELIVERED_POLL_S)
        return False


def brief_text(agent: str, space: ws.Workspace, text: str, source: Path) -> str:
    """The text of a ``brief`` envelope: where to work, how to report, then the brief."""
    return (
        f"brief for {agent}: workspace {space.name}, repository {space.repo} (a clone of "
        f"{source}), branch {space.branch} from {space.base} ({space.base_sha[:12]}). Work "
        f"and commit there only. Report with: netskyctl clone report \"what you did\" "
        f"(add --done when the task is done; --sha to name a commit other than HEAD).\n"
        f"{text.strip()}"
    )


