"""meta.db's migrations: ``(version, SQL script)``, applied in order by ``Store.open``.

Append new versions; never edit released ones (their text is what older databases
ran). The last version is ``netsky_shared.protocol.SCHEMA_VERSION``, which
``netskyctl doctor`` compares with a database's ``PRAGMA user_version`` without
importing aiosqlite; the check below keeps the two equal.
"""

from __future__ import annotations

from netsky_shared.protocol import SCHEMA_VERSION

#: (version, SQL script). Append new versions; never edit released ones.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            event TEXT NOT NULL,
            agent TEXT,
            fields TEXT NOT NULL
        );
        CREATE INDEX events_ts ON events(ts);
        CREATE TABLE ticks (
            id INTEGER PRIMARY KEY,
            started_ts TEXT NOT NULL,
            finished_ts TEXT NOT NULL,
            duration_ms REAL NOT NULL,
            summary TEXT NOT NULL
        );
        CREATE TABLE spawns (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            agent TEXT NOT NULL,
            session_id TEXT NOT NULL,
            runtime TEXT NOT NULL,
            reason TEXT NOT NULL,
            pane_pid INTEGER,
            ready_ts TEXT,
            outcome TEXT NOT NULL DEFAULT 'spawned'
        );
        CREATE INDEX spawns_agent ON spawns(agent, ts);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            envelope_id TEXT,
            sender TEXT,
            recipient TEXT NOT NULL,
            kind TEXT,
            envelope_ts TEXT,
            file TEXT NOT NULL,
            status TEXT NOT NULL,
            delivered_ts TEXT,
            via TEXT,
            duplicate INTEGER NOT NULL DEFAULT 0,
            reason TEXT
        );
        CREATE INDEX messages_recipient ON messages(recipient, delivered_ts);
        CREATE INDEX messages_envelope ON messages(envelope_id);
        """,
    ),
    (
        2,
        """
        -- One row per envelope handed to a delivery path, written before the paste:
        -- after a crash, a redelivery of an id found here is marked as a possible repeat.
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            envelope_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            ts TEXT NOT NULL,
            via TEXT NOT NULL
        );
        CREATE INDEX attempts_envelope ON attempts(envelope_id);
        CREATE INDEX messages_file ON messages(recipient, file);
        """,
    ),
    (
        3,
        """
        -- One row per attempt of a restart (netskyd/restart.py): started when the
        -- machine enters CLAIMED, finished when it is verified or a step fails.
        CREATE TABLE restarts (
            id INTEGER PRIMARY KEY,
            restart_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            agent TEXT NOT NULL,
            cause TEXT,
            reason TEXT,
            started_ts TEXT NOT NULL,
            finished_ts TEXT,
            outcome TEXT NOT NULL DEFAULT 'running',
            failure TEXT,
            UNIQUE (restart_id, attempt)
        );
        CREATE INDEX restarts_agent ON restarts(agent, started_ts);
        -- One row per agent death the daemon noticed (tmux hook or tick).
        CREATE TABLE crashes (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            agent TEXT NOT NULL,
            session_id TEXT,
            exit_status INTEGER,
            failure TEXT NOT NULL,
            noticed_by TEXT NOT NULL,
            pane_tail TEXT
        );
        CREATE INDEX crashes_agent ON crashes(agent, ts);
        """,
    ),
    (
        4,
        """
        -- state/owner-pages.jsonl imported row by row (netskyd.pager; the file is written
        -- first, also by netskyctl escalate --direct): file_offset is the row's byte
        -- offset in the file, so an import that runs twice adds nothing twice.
        CREATE TABLE owner_pages (
            id INTEGER PRIMARY KEY,
            file_offset INTEGER NOT NULL UNIQUE,
            ts TEXT NOT NULL,
            incident TEXT,
            key TEXT,
            severity TEXT,
            kind TEXT NOT NULL,
            round INTEGER,
            try INTEGER,
            leg TEXT,
            status TEXT NOT NULL,
            reason TEXT,
            duration_ms REAL,
            via TEXT
        );
        CREATE INDEX owner_pages_incident ON owner_pages(incident, ts);
        -- The incidents of state/escalations/, as last seen by the daemon.
        CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            severity TEXT NOT NULL,
            opened_ts TEXT NOT NULL,
            last_ts TEXT NOT NULL,
            count INTEGER NOT NULL,
            rounds INTEGER NOT NULL,
            state TEXT NOT NULL,
            acked_ts TEXT,
            resolved_ts TEXT,
            resolution TEXT,
            legs TEXT NOT NULL
        );
        CREATE INDEX incidents_key ON incidents(key, opened_ts);
        -- Named positions, e.g. how far owner-pages.jsonl has been imported.
        CREATE TABLE cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """,
    ),
    (
        5,
        """
        -- Did the agent take it (netskyd/consume.py)? On delivered rows: submitted_at
        -- (the pane's Enter sent), consumption (pending while the daemon watches the
        -- pane, then consumed, unconsumed or unchecked), consumed_at (confirmed on the
        -- screen) and enter_retries (Enter pressed once more). NULL on other rows.
        ALTER TABLE messages ADD COLUMN submitted_at TEXT;
        ALTER TABLE messages ADD COLUMN consumption TEXT;
        ALTER TABLE messages ADD COLUMN consumed_at TEXT;
        ALTER TABLE messages ADD COLUMN enter_retries INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX messages_consumption ON messages(recipient, consumption);
        """,
    ),
    (
        6,
        """
        -- The work loop (netskyd/work/): one row per brief given to a clone. state:
        -- briefed -> reported -> done, then harvested; or killed / failed. head_sha and
        -- ahead are the clone's last report; harvested_sha the tip last harvested.
        CREATE TABLE clone_dispatches (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            agent TEXT NOT NULL,
            workspace TEXT NOT NULL,
            source_repo TEXT NOT NULL,
            repo TEXT NOT NULL,
            branch TEXT NOT NULL,
            base TEXT NOT NULL,
            base_sha TEXT NOT NULL,
            runtime TEXT NOT NULL,
            brief_envelope TEXT,
            brief_bytes INTEGER NOT NULL,
            state TEXT NOT NULL,
            state_ts TEXT NOT NULL,
            head_sha TEXT,
            ahead INTEGER,
            report TEXT,
            reported_ts TEXT,
            harvested_sha TEXT,
            error TEXT
        );
        CREATE INDEX clone_dispatches_agent ON clone_dispatches(agent, id);
        CREATE INDEX clone_dispatches_workspace ON clone_dispatches(workspace, id);
        -- One row per harvest attempt. outcome: landed, conflict, red, refused, failed.
        CREATE TABLE harvests (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            finished_ts TEXT,
            dispatch_id INTEGER,
            agent TEXT,
            workspace TEXT NOT NULL,
            target_repo TEXT NOT NULL,
            onto TEXT NOT NULL,
            onto_before TEXT,
            onto_after TEXT,
            source_tip TEXT,
            commits INTEGER NOT NULL DEFAULT 0,
            check_command TEXT,
            check_exit INTEGER,
            check_s REAL,
            log_path TEXT,
            pushed TEXT,
            outcome TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX harvests_workspace ON harvests(workspace, id);
        """,
    ),
    (
        7,
        """
        -- Scheduling (netskyd/schedule/). A cron entry's baseline: slots after it are the
        -- entry's (set when netskyd first sees the entry, or its schedule or zone changes,
        -- or it is resumed), so a new entry never fires for slots before it existed.
        CREATE TABLE cron_entries (
            name TEXT PRIMARY KEY,
            schedule TEXT NOT NULL,
            tz TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            baseline REAL NOT NULL,
            seen_ts TEXT NOT NULL
        );
        -- Loops: state active -> done (count or until reached) or removed (loop rm).
        CREATE TABLE loops (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            agent TEXT NOT NULL,
            created_by TEXT NOT NULL,
            interval_s REAL NOT NULL,
            text TEXT NOT NULL,
            created REAL NOT NULL,
            count INTEGER,
            until REAL,
            state TEXT NOT NULL,
            state_ts TEXT NOT NULL,
            reason TEXT
        );
        -- One row per fire (kind cron: entry is the name; loop: the loop's id). slot is
        -- the slot fired for, through the newest slot the row stands for (missed slots
        -- it replaces, slots coalesced into it while it was pending), both epoch s.
        -- The row is written (outcome persisted) before its envelope is sent, then
        -- marked sent; skipped (catch-up none) and refused (no such agent) rows send
        -- nothing. envelope_json is kept until the envelope is in the inbox.
        CREATE TABLE fires (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            entry TEXT NOT NULL,
            agent TEXT NOT NULL,
            slot REAL NOT NULL,
            through REAL NOT NULL,
            slot_ts TEXT NOT NULL,
            fired_at TEXT NOT NULL,
            late_s REAL NOT NULL,
            missed INTEGER NOT NULL DEFAULT 0,
            coalesced INTEGER NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL,
            envelope TEXT,
            envelope_file TEXT,
            envelope_json TEXT,
            sent_at TEXT,
            reason TEXT
        );
        CREATE INDEX fires_entry ON fires(kind, entry, id);
        CREATE INDEX fires_outcome ON fires(outcome, id);
        CREATE INDEX fires_envelope ON fires(envelope);
        """,
    ),
]

if MIGRATIONS[-1][0] != SCHEMA_VERSION:  # the next migration bumps both
    raise RuntimeError("netsky_shared.protocol.SCHEMA_VERSION must be the last migration's")
