"""Fetching the certificate chain a TLS server presents: for ``spki --connect``,
``lint --connect``, ``rotate`` and ``monitor``.

Python 3.11 and 3.12 do not expose the peer's chain publicly; ``ssl.SSLSocket`` gained
``get_unverified_chain()`` / ``get_verified_chain()`` in 3.13. CPython has carried the
same two methods on the private ``SSLSocket._sslobj`` since 3.10, so we use the public
method where it exists and the private one otherwise. That needs no extra dependency and
no ``openssl`` binary, and the handshake is the same OpenSSL one that Python clients make.

Connections go only to the host the caller names.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from cryptography import x509

from pinserver.errors import FetchError

DEFAULT_PORT = 443
DEFAULT_TIMEOUT = 10.0


def parse_host_port(text: str, *, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '[' in an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected :PORT after the IPv6 address")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r}: no host name")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _der_list(chain: Any) -> list[bytes]:
    """Python 3.13 returns DER bytes; the private 3.10+ API returns ``_ssl.Certificate``."""
    import _ssl  # noqa: PLC0415  (private: only reached where the private API is used)

    return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain or []]


def _chain_from(tls: ssl.SSLSocket, which: str) -> list[bytes]:
    method = getattr(tls, f"get_{which}_chain", None)
    if method is None:
        sslobj = getattr(tls, "_sslobj", None)
        method = getattr(sslobj, f"get_{which}_chain", None)
    if method is None:
        raise FetchError(
            "this Python cannot read a TLS peer's certificate chain (CPython 3.10 or later"
            " is needed)"
        )
    return _der_list(method())


def _handshake(
    host: str,
    port: int,
    *,
    servername: str | None,
    cafile: str | None,
    timeout: float,
    verify: bool,
    which: str,
) -> list[x509.Certificate]:
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    name = servername or host
    where = f"{host}:{port}" + (f" (SNI {name})" if name != host else "")
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            ders = _chain_from(tls, which)
    except ssl.SSLCertVerificationError as e:
        trust = f"the CA file {cafile}" if cafile else "the system's trusted CAs"
        raise FetchError(
            f"the certificate chain of {where} does not verify against {trust}:"
            f" {e.verify_message}; pass --cafile with the CA that issued it"
        ) from e
    except ssl.SSLError as e:
        raise FetchError(f"TLS handshake with {where} failed: {e}") from e
    except TimeoutError as e:
        raise FetchError(f"no TLS answer from {where} within {timeout:g} s") from e
    except OSError as e:
        raise FetchError(f"cannot connect to {where}: {e.strerror or e}") from e
    if not ders:
        raise FetchError(f"{where} presented no certificate")
    return [x509.load_der_x509_certificate(der) for der in ders]


def fetch_chain(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    servername: str | None = None,
    cafile: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    verify: bool = True,
) -> list[x509.Certificate]:
    """The chain exactly as the server presents it, leaf first.

    With ``verify`` (the default) the handshake must verify against ``cafile`` (or the
    system's CAs) for ``servername`` (default ``host``); ``verify=False`` shows the chain
    of a server that does not verify, for diagnosis only. Raises ``FetchError``.
    """
    return _handshake(
        host,
        port,
        servername=servername,
        cafile=cafile,
        timeout=timeout,
        verify=verify,
        which="unverified",
    )


def fetch_verified_chain(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    servername: str | None = None,
    cafile: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[x509.Certificate]:
    """The chain OpenSSL built and verified (leaf to trust anchor): what a client's pin
    check sees (SPEC section 6: pins match the verified chain, never what was merely sent)."""
    return _handshake(
        host,
        port,
        servername=servername,
        cafile=cafile,
        timeout=timeout,
        verify=True,
        which="verified",
    )
