"""Structured logging: console lines for a person, JSON lines for machines.

Both the node's own structlog events and stdlib loggers (py-libp2p, hypercorn)
go through one :class:`structlog.stdlib.ProcessorFormatter` on stderr. The
`libp2p` logger sets ``propagate = False`` and no handler at import time, so
its warnings would bypass the node's format (LIBP2P_NOTES.md trap 8): we
re-attach it to the root logger here.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def setup_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None,
                  libp2p_level: str = "warning") -> None:
    stream = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    _libp2p_threshold[0] = _LEVELS.get(libp2p_level.lower(), logging.WARNING)
    # py-libp2p sets levels on child loggers itself; filter at the handler so ours wins.
    handler.addFilter(
        lambda r: not r.name.startswith("libp2p") or r.levelno >= _libp2p_threshold[0])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    route_libp2p_logs(libp2p_level)
    for noisy in ("hypercorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_libp2p_threshold = [logging.WARNING]


def quiet_libp2p_for_shutdown() -> None:
    """While the host closes, py-libp2p warns (with tracebacks) about connections that race
    the shutdown; they are expected, so only errors get through from here on."""
    _libp2p_threshold[0] = max(_libp2p_threshold[0], logging.ERROR)


def route_libp2p_logs(level: str = "warning") -> None:
    """Send py-libp2p's records through the root handler (trap 8)."""
    import libp2p  # noqa: F401  - its import configures the logger we override

    lg = logging.getLogger("libp2p")
    lg.handlers.clear()
    lg.propagate = True
    lg.setLevel(_LEVELS.get(level.lower(), logging.WARNING))
    gs = logging.getLogger("libp2p.pubsub.gossipsub")
    if _drop_pending_queue_warnings not in gs.filters:
        gs.addFilter(_drop_pending_queue_warnings)


def _drop_pending_queue_warnings(record: logging.LogRecord) -> bool:
    """py-libp2p queues gossip for a connected peer whose subscriptions it has not seen yet
    and, once 100 RPCs are queued, warns on every further message: thousands of lines a
    minute per validator while such a peer's pubsub stream fails to open under load, each
    formatted and written by a CPU-starved process. The queue itself stays bounded."""
    return not str(record.msg).startswith("pending message queue for peer")


def get_logger(name: str = "fedledger", **bind: Any) -> Any:
    return structlog.get_logger(name).bind(**bind)
