"""The publish token is a bearer secret: the CLI warns before sending it in clear
text to anything but the loopback host."""

from __future__ import annotations

import pytest

from pinserver.cli._http import ServerClient


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://pins.example.com", True),
        ("http://10.0.0.5:8080", True),
        ("https://pins.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
    ],
)
def test_a_token_over_plain_http_is_warned_about(
    url: str, warned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    ServerClient(url, token="s3cret").close()
    err = capsys.readouterr().err
    assert ("clear text" in err) is warned
    assert "s3cret" not in err


def test_no_token_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    ServerClient("http://pins.example.com").close()
    assert capsys.readouterr().err == ""
