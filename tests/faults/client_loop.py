"""A client process to kill: refreshes in a loop and prints each manifest version it
has accepted, after ``refresh()`` returned (so after the durable write).

    python -m tests.faults.client_loop URL ROOT_FILE STATE_DIR
"""

from __future__ import annotations

import sys

from pinserver.client import PinClient
from pinserver.errors import FetchError


def main(url: str, root_file: str, state_dir: str) -> None:
    client = PinClient(url, trusted_root=root_file, state_dir=state_dir, timeout=10)
    print(f"loaded {client.manifest_version}", flush=True)
    while True:
        try:
            result = client.refresh()
        except FetchError:
            continue
        if result.updated:
            print(f"accepted {result.manifest_version}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
