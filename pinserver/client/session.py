"""A ``requests.Session`` that checks pins on every new TLS connection.

Plain ``http://`` to a host with ``enforce`` pins is refused before anything is
sent (:meth:`PinChecker.check_plaintext`), as HSTS would.

The check sits in the urllib3 connection's ``connect()``, right after the TLS
handshake (with normal CA and hostname validation) and before any request byte
is written: on a mismatch in ``enforce`` mode the socket is closed and
:class:`~pinserver.errors.PinMismatchError` propagates as itself (urllib3 and
requests only wrap the socket and TLS exceptions they know).

Pins are matched against the chain OpenSSL *verified* (``SSL_get0_verified_chain``:
leaf, intermediates and the trust anchor from the local CA store), never against
the certificates the peer merely sent (CVE-2016-2402). Python 3.13 exposes it as
``SSLSocket.get_verified_chain()``; 3.10 to 3.12 have the same call on the private
``_sslobj``. When neither is available (TLS inside an HTTPS proxy tunnel) or
certificate verification is off, there is no verified chain and a pinned host
fails closed in ``enforce`` mode.
"""

from __future__ import annotations

import _ssl
import logging
import ssl
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from pinserver.documents import PinSet
from pinserver.errors import PinMismatchError
from pinserver.pins import is_chain_pinned, spki_sha256

logger = logging.getLogger(__name__)

PinsFor = Callable[[str], PinSet | None]
OnReport = Callable[[str, int, tuple[str, ...], PinSet], None]


def verified_chain_der(sock: object) -> list[bytes] | None:
    """DER certificates of the chain the TLS library verified (leaf first, anchor
    last), or None when it cannot be had."""
    if not isinstance(sock, ssl.SSLSocket):
        return None  # e.g. urllib3's SSLTransport for TLS inside a TLS proxy tunnel
    public = getattr(sock, "get_verified_chain", None)  # Python 3.13+
    if public is not None:
        return [bytes(cert) for cert in public()]
    sslobj = getattr(sock, "_sslobj", None)
    private = getattr(sslobj, "get_verified_chain", None)
    if private is None:
        return None
    return [cert.public_bytes(_ssl.ENCODING_DER) for cert in private()]


class PinChecker:
    """Decides, for one fresh connection, whether it may carry a request."""

    def __init__(self, pins_for: PinsFor, on_report: OnReport) -> None:
        self._pins_for = pins_for
        self._on_report = on_report

    def check(self, host: str, port: int, sock: object, *, is_verified: bool) -> None:
        """Raise ``PinMismatchError`` when ``host`` has enforced pins and no SPKI hash
        of the verified chain is among them; report-mode mismatches are reported."""
        host = host.lower().rstrip(".")
        pinset = self._pins_for(host)
        if pinset is None:
            return
        chain = verified_chain_der(sock) if is_verified else None
        observed = tuple(spki_sha256(der) for der in chain or ())
        if chain and is_chain_pinned(pinset, observed):
            return
        if chain:
            why = f"no certificate of the verified chain of {host}:{port} matches its pins"
        else:
            why = (
                f"no verified chain for {host}:{port} (certificate verification off, or"
                " TLS through a proxy tunnel), so its pins cannot be checked"
            )
        if pinset.mode == "report":
            logger.warning("%s (report mode: request allowed, report sent)", why)
            self._on_report(host, port, observed, pinset)
            return
        raise PinMismatchError(
            f"{why}; observed {list(observed)}, pinned {sorted(pinset.hashes)}",
            host=host,
            observed=observed,
        )

    def check_plaintext(self, host: str, port: int) -> None:
        """Plain http to a host with ``enforce`` pins is refused before anything is
        sent: the pins say the host is reached over TLS with these keys, and plain
        http (a typo, or a redirect from elsewhere) would skip them and carry any
        cookies in clear. ``report`` pin sets let it through with a warning (there is
        no chain to report)."""
        host = host.lower().rstrip(".")
        pinset = self._pins_for(host)
        if pinset is None:
            return
        if pinset.mode == "report":
            logger.warning("plain http to %s:%s, which has report-mode pins", host, port)
            return
        raise PinMismatchError(
            f"plain http to {host}:{port} refused: the host has enforced pins, use https",
            host=host,
            observed=(),
        )


class _PinCheckingConnection:
    """Mixed in front of urllib3's HTTPS connection class: checks after the handshake."""

    pin_checker: ClassVar[PinChecker]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        conn: Any = self
        host = conn._tunnel_host or conn.host
        port = conn._tunnel_port or conn.port or 443
        try:
            self.pin_checker.check(host, port, conn.sock, is_verified=bool(conn.is_verified))
        except BaseException:
            conn.close()  # nothing is sent on a connection that failed its pins
            raise


def _pinned_pool_class(base: type[HTTPSConnectionPool], checker: PinChecker) -> type[Any]:
    connection_class = type(
        "PinnedHTTPSConnection",
        (_PinCheckingConnection, base.ConnectionCls),
        {"pin_checker": checker},
    )
    return type("PinnedHTTPSConnectionPool", (base,), {"ConnectionCls": connection_class})


class PinnedHTTPAdapter(HTTPAdapter):
    """An HTTPAdapter whose HTTPS pools (direct, proxied or SOCKS) check pins."""

    def __init__(self, checker: PinChecker, **kwargs: Any) -> None:
        self._checker = checker  # set before HTTPAdapter.__init__ builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._install(self.poolmanager)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url or "")
        if url.scheme == "http" and url.hostname:
            self._checker.check_plaintext(url.hostname, url.port or 80)
        return super().send(request, *args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        self._install(manager)
        return manager

    def _install(self, manager: PoolManager) -> None:
        base: Any = manager.pool_classes_by_scheme["https"]
        if getattr(base.ConnectionCls, "pin_checker", None) is self._checker:
            return
        manager.pool_classes_by_scheme = {
            **manager.pool_classes_by_scheme,
            "https": _pinned_pool_class(base, self._checker),
        }


def pinned_session(checker: PinChecker) -> requests.Session:
    """A requests.Session whose HTTPS connections pass through ``checker``."""
    session = requests.Session()
    adapter = PinnedHTTPAdapter(checker)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
