"""Logging: structlog events to ``logs/netskyd.jsonl`` (JSON) and readable console lines.

One event per state change, named ``area.change`` (``agent.spawned``,
``envelope.delivered``). structlog renders through the stdlib logging
handlers, so the file gets JSON and stderr gets ``ConsoleRenderer`` output.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(log_file: Path | None, level: str = "info", console: bool = True) -> None:
    """Send structlog events to ``log_file`` as JSON lines (None: no file) and, with
    ``console``, as readable lines to stderr (never stdout: ``netskyd channel-server``
    speaks MCP there)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))

    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=_SHARED,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(default=str),
                ],
            )
        )
        root.addHandler(file_handler)
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=_SHARED,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
                ],
            )
        )
        root.addHandler(console_handler)
    # Quiet chatty libraries; their warnings still come through.
    for name in ("watchfiles", "aiosqlite", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)

    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get(name: str = "netskyd") -> Any:
    """Return a structlog logger (``log.info("event", key=value)``)."""
    return structlog.get_logger(name)
