"""Which requests the access log skips, and how the poll setting is read."""

from __future__ import annotations

import pytest

from pinserver.server.accesslog import is_successful_poll, log_polls_setting

POLL = {"PATH_INFO": "/v1/manifest.json", "REQUEST_METHOD": "GET"}


@pytest.mark.parametrize(
    ("environ", "status", "skipped"),
    [
        (POLL, 200, True),
        (POLL, 304, True),
        ({**POLL, "REQUEST_METHOD": "HEAD"}, 200, True),
        (POLL, 404, False),  # no manifest yet
        (POLL, 503, False),  # store not initialised
        (POLL, None, False),  # the response never started
        ({**POLL, "REQUEST_METHOD": "POST"}, 200, False),
        ({**POLL, "PATH_INFO": "/v1/manifests/1.json"}, 200, False),
        ({**POLL, "PATH_INFO": "/v1/manifest.json/"}, 200, False),
    ],
)
def test_only_successful_polls_are_skipped(
    environ: dict[str, str], status: int | None, skipped: bool
) -> None:
    assert is_successful_poll(environ, status) is skipped


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("off", False), ("1", True), (" Yes ", True)],
)
def test_the_poll_setting(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {"PINSERVER_ACCESS_LOG_POLLS": value}
    assert log_polls_setting(environ) is expected


def test_an_unclear_poll_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="PINSERVER_ACCESS_LOG_POLLS='sometimes'"):
        log_polls_setting({"PINSERVER_ACCESS_LOG_POLLS": "sometimes"})
