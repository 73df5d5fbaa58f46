"""Running the node daemon from the CLI: `fedledger node run` and `fedledger train` share it."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.common import fail

if TYPE_CHECKING:
    from node.config import NodeConfig

BootstrapOpt = typer.Option([], "--bootstrap", "-b",
                            help="Extra bootstrap peer /ip4/H/tcp/P/p2p/ID (repeatable).")
ListenOpt = typer.Option([], "--listen", help="Listen multiaddr (replaces config).")
RpcListenOpt = typer.Option(None, "--rpc", help="RPC listen address host:port.")
LogFormatOpt = typer.Option(None, "--log-format", help="console or json.")
LogLevelOpt = typer.Option(None, "--log-level", help="debug, info, warning, error.")


def run_node(home: Path, bootstrap: list[str], listen: list[str], rpc: str | None,
             log_format: str | None, log_level: str | None,
             configure: Callable[[NodeConfig], None] | None = None) -> None:
    """Load the home's config, apply the flags (and ``configure``, which may exit with a
    message), run the node until SIGINT/SIGTERM."""
    import trio

    from node.config import ConfigError
    from node.daemon import Node, Overrides, apply_overrides, run_until_signalled
    from node.home import Home, HomeError
    from node.logs import setup_logging
    from node.p2p import BadMultiaddr

    h = Home(home)
    try:
        h.check()
        cfg = h.load_config()
        cfg = apply_overrides(cfg, Overrides(bootstrap, listen, rpc, log_format, log_level))
        if configure is not None:
            configure(cfg)
            cfg.validate()
    except BadMultiaddr as e:
        fail(str(e), code=2)
    except (HomeError, ConfigError) as e:
        fail(str(e))
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        node = Node(h, cfg)
    except (HomeError, ConfigError, ValueError) as e:
        fail(str(e))
    try:
        trio.run(run_until_signalled, node)
    except KeyboardInterrupt:
        pass
    except BaseException as e:
        err = listen_error(e)
        if err is None:
            raise
        fail(f"cannot start: {err.strerror or err} (is the port in use? rpc {cfg.rpc.laddr}, "
             f"p2p {' '.join(cfg.p2p.listen)})")


_BIND_ERRNOS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def listen_error(e: BaseException) -> OSError | None:
    """The OSError a failed bind raised, also from inside the nurseries' exception groups
    (hypercorn binds the RPC socket in a task, so its EADDRINUSE arrives wrapped). Other
    errors keep their traceback: "is the port in use?" would mislead there."""
    if isinstance(e, OSError):
        return e if e.errno in _BIND_ERRNOS else None
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            if (found := listen_error(sub)) is not None:
                return found
    return None
