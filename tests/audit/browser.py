"""Headless Chromium driven directly (no driver library): ``--dump-dom`` gives the DOM
the browser built, ``--screenshot`` a PNG of what it painted, and ``--enable-logging``
its console, where every Content-Security-Policy violation is reported.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_TIMEOUT = 60
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--enable-logging=stderr",
    "--v=0",
)


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass(frozen=True)
class BrowserRun:
    stdout: str
    console: list[str]

    @property
    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]


def run_chromium(
    chromium: str, url: str, *extra: str, window: tuple[int, int] = (1200, 1000)
) -> BrowserRun:
    """One fresh browser profile, one page load; only ever 127.0.0.1 URLs."""
    assert url.startswith("http://127.0.0.1:"), url
    with tempfile.TemporaryDirectory(prefix="pinserver-chromium-") as profile:
        done = subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={window[0]},{window[1]}",
                *extra,
                url,
            ],
            capture_output=True,
            timeout=CHROMIUM_TIMEOUT,
            check=False,
        )
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}:\n{stderr[-4000:]}")
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    return BrowserRun(done.stdout.decode("utf-8", "replace"), console)


def dump_dom(chromium: str, url: str) -> BrowserRun:
    return run_chromium(chromium, url, "--dump-dom")


def screenshot(
    chromium: str, url: str, target: Path, *, window: tuple[int, int] = (1200, 1000)
) -> BrowserRun:
    target.parent.mkdir(parents=True, exist_ok=True)
    run = run_chromium(chromium, url, f"--screenshot={target}", window=window)
    if not target.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {target}")
    return run


# --- reading what the browser built ---------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Collector(HTMLParser):
    """Every element with its attributes and its whole text content."""

    _VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in self._VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data


def elements(dom: str) -> list[Element]:
    collector = _Collector()
    collector.feed(dom)
    collector.close()
    for element in collector.elements:
        element.text = " ".join(element.text.split())
    return collector.elements


def with_class(dom: str, cls: str, tag: str | None = None) -> list[Element]:
    return [e for e in elements(dom) if cls in e.classes and (tag is None or e.tag == tag)]


def by_id(dom: str, ident: str) -> Element:
    found = [e for e in elements(dom) if e.attrs.get("id") == ident]
    assert len(found) == 1, f"expected one element with id {ident!r}, found {len(found)}"
    return found[0]


# --- reading what the browser painted -------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into
    rows of RGB bytes: enough to ask which colours were painted."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = color_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or color_type not in (2, 6) or interlace != 0:
                raise ValueError("only 8-bit RGB or RGBA non-interlaced PNGs are decoded")
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    channels = 4 if color_type == 6 else 3
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        filter_type = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            up_left = previous[x - channels] if x >= channels else 0
            if filter_type == 1:
                line[x] = (line[x] + left) & 0xFF
            elif filter_type == 2:
                line[x] = (line[x] + up) & 0xFF
            elif filter_type == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[x] = (line[x] + pred) & 0xFF
        previous = line
        rgb = bytes(line) if channels == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def painted_colours(png: bytes) -> set[tuple[int, int, int]]:
    _, _, rows = png_pixels(png)
    colours: set[tuple[int, int, int]] = set()
    for row in rows:
        colours.update(zip(row[0::3], row[1::3], row[2::3], strict=True))
    return colours


def hex_colour(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
