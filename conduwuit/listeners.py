"""Turn the listening options of :class:`Config` into one Hypercorn config."""

from __future__ import annotations

import ipaddress
import logging

from hypercorn.config import Config as HypercornConfig

from conduwuit.config import Config


def tcp_bind(address: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:  # a host name; Hypercorn resolves it
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"


def unix_umask(perms: int) -> int:
    """``unix_socket_perms`` is written like chmod's octal (660); a umask grants exactly that."""
    mode = int(str(perms), 8)
    return 0o777 & ~mode


def hypercorn_config(config: Config) -> HypercornConfig:
    """One config for every listener, so a single ``serve()`` runs them all.

    With TLS configured the TCP addresses serve HTTPS and the UNIX socket stays
    plain (it is for a reverse proxy on the same machine).
    """
    hc = HypercornConfig()
    tcp = [tcp_bind(address, port) for address, port in config.listen_addresses()]
    unix = [f"unix:{config.unix_socket_path}"] if config.unix_socket_path else []
    if config.tls.certs and config.tls.key:
        hc.certfile = config.tls.certs
        hc.keyfile = config.tls.key
        hc.bind = tcp
        hc.insecure_bind = unix
    else:
        hc.bind = tcp + unix
    if unix:
        hc.umask = unix_umask(config.unix_socket_perms)
    hc.keep_alive_timeout = config.keep_alive_timeout
    # In-flight requests may finish for as long as a request may take at all.
    hc.graceful_timeout = config.client_request_timeout
    hc.read_timeout = None  # long-polls keep a request open far longer than any read
    hc.accesslog = None  # access logging belongs to the app, where the request id is known
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our handler and filter
    hc.include_server_header = False
    hc.h11_max_incomplete_size = 64 * 1024
    return hc
