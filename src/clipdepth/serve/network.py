"""Where ``clipdepth serve`` listens: a loopback address unless allowed otherwise, and an address
and port that can be bound, both checked before the server starts. No Gradio."""

from __future__ import annotations

import errno
import ipaddress
import socket

from ..errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
LOOPBACK = "127.0.0.0/8, ::1, localhost"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is the name ``localhost`` or a loopback address (127.0.0.0/8, ::1;
    ``[::1]`` as in a URL too)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # another host name: it may resolve anywhere
        return False


def check_host(host: str, allow_remote: bool = False) -> None:
    """ConfigError (setting ``allow_remote``, which allows it) for a ``host`` that is not a
    loopback address (``is_loopback``), unless ``allow_remote``."""
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"{host}: not a loopback address ({LOOPBACK}): the page would be open to the network; allow that explicitly with allow_remote",
            setting="allow_remote",
        )


def check_address(host: str, port: int) -> None:
    """ConfigError unless a server can listen on ``host``:``port`` now: a port out of range or in
    use (setting ``port``), a host that does not resolve or is not an address of this machine
    (setting ``host``). Each address ``host`` resolves to is bound and released at once, as the
    server will bind them."""
    if not 0 < port < 65536:
        raise ConfigError(f"{port}: not a port number (1 to 65535)", setting="port")
    try:
        addresses = socket.getaddrinfo(host.removeprefix("[").removesuffix("]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"{host}: cannot resolve this host name ({exc}): give an address of this machine", setting="host") from None
    for family, kind, proto, _, address in dict.fromkeys(addresses):  # each once
        with socket.socket(family, kind, proto) as probe:
            # as the server sets them: a port a stopped server left in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise address_error(host, port, exc) from None


def address_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The one line for a server that cannot listen on ``host``:``port`` (``exc`` from binding it)."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{host}:{port} is in use (by another server, perhaps another clipdepth serve): stop that one, or choose another port",
            setting="port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{host}:{port}: permission denied (ports below 1024 need root): choose a port above 1023", setting="port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"{host}: not an address of this machine, so nothing can listen there: give one of its addresses (default {DEFAULT_HOST})",
            setting="host",
        )
    return ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another port or host", setting="port")


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "address_error", "check_address", "check_host", "is_loopback"]
