"""The pinserver client: verified pin updates and pin-enforcing requests sessions.

Example::

    from pinserver.client import PinClient

    client = PinClient("https://pins.example.com", trusted_root="root-1.json",
                       state_dir="/var/lib/app/pins")
    result = client.refresh()        # RefreshResult(updated, root_version, manifest_version, ...)
    pinset = client.pins_for("api.example.com")   # PinSet or None
    session = client.session()       # requests.Session that enforces the pins

See docs/client.md for embedding, errors and what to do about them.
"""

from pinserver.client._pinclient import PinClient, RefreshResult
from pinserver.client.fetcher import Fetcher, FetchResponse
from pinserver.documents import Pin, PinSet

__all__ = ["FetchResponse", "Fetcher", "Pin", "PinClient", "PinSet", "RefreshResult"]
