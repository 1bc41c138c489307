"""Child process of the SIGKILL test: swaps state as fast as it can, forever.

    python -m tests.client.crash_child STATE_DIR ANCHOR_FILE CHAIN_FILE

CHAIN_FILE holds one base64 manifest envelope a line (a hash chain). The child
serves them to a real PinClient through an in-memory Fetcher, one new version per
refresh, so every refresh is a full verify + durable write + swap. It prints
``ready`` once the client has loaded, then never stops on its own.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from pinserver.client import Fetcher, FetchResponse, PinClient
from pinserver.errors import FetchError
from tests.factory import NOW


class ChainFetcher(Fetcher):
    """Serves manifest ``next`` of the chain (0-based) at /v1/manifest.json."""

    def __init__(self, manifests: list[bytes]) -> None:
        self.manifests = manifests
        self.next = 0

    def _fetch(self, url: str, *, etag: str | None, max_bytes: int) -> FetchResponse:
        if not url.endswith("/v1/manifest.json"):
            raise FetchError(f"{url}: not found", http_status=404)
        return FetchResponse(200, self.manifests[min(self.next, len(self.manifests) - 1)], None)


def main() -> None:
    state_dir, anchor_file, chain_file = sys.argv[1:4]
    manifests = [base64.b64decode(line) for line in Path(chain_file).read_text().split()]
    fetcher = ChainFetcher(manifests)
    client = PinClient(
        "http://chain.invalid",
        trusted_root=Path(anchor_file),
        state_dir=state_dir,
        clock=lambda: NOW,
        fetcher=fetcher,
    )
    if client.load_problem is not None:
        print(f"load problem: {client.load_problem}", flush=True)
        sys.exit(3)
    print("ready", client.manifest_version, flush=True)
    while True:
        fetcher.next = client.manifest_version or 0
        client.refresh()


if __name__ == "__main__":
    main()
