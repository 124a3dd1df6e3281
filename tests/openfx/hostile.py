"""A misbehaving bridge and a misbehaving host for the OpenFX plug-in, and the cases it must turn into one
``FaceFix: ...`` error (kOfxStatFailed) within its request deadline: never a crash, a hang or a frame passed off
as a result.

Standard library + numpy only: test_hostile.py drives every case in-process, and again in a subprocess against the
AddressSanitizer + UndefinedBehaviorSanitizer build (where torch is not wanted).

``FakeBridge``: a scripted HTTP server on 127.0.0.1 (any free port), one thread a connection; each request path
gets a ``Reply`` (a function that writes whatever bytes it likes to the socket). ``run_case(ofx_host, bundle,
case, folder)`` writes the connection file into ``folder``, points ``FACEFIX_CACHE`` at it, drives the plug-in
and returns the one message it posted and the seconds it took.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIRST, N, SIZE = 1001, 4, (12, 16)  # frames, (height, width)
ROD = (0.0, 0.0, float(SIZE[1]), float(SIZE[0]))
DEADLINE_S = 0.5  # FACEFIX_OFX_TIMEOUT of the cases that wait for the deadline
GUARD_S = "10"  # FACEFIX_OFX_TIMEOUT of the others: a regression fails the case instead of hanging the suite

Reply = Callable[[socket.socket, threading.Event], None]


def answer(status: int, body: bytes, headers: str | None = None) -> Reply:
    """A well-formed answer (``headers``: the header lines instead of a correct Content-Length)."""
    head = headers if headers is not None else f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status} X\r\n{head}Connection: close\r\n\r\n".encode() + body)

    return reply


def answer_json(value: Any, status: int = 200) -> Reply:
    return answer(status, json.dumps(value).encode())


def raw(data: bytes) -> Reply:
    """These bytes, then the connection closed."""
    return lambda conn, stop: conn.sendall(data)


def trickle(prefix: bytes, every_s: float = 0.02, byte: bytes = b"x") -> Reply:
    """``prefix``, then one byte every ``every_s`` for as long as the plug-in listens: each read alone is quick."""

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix)
        while not stop.wait(every_s):
            conn.sendall(byte)

    return reply


def flood(prefix: bytes, chunk: int = 1 << 20, limit: int = 256 << 20) -> Reply:
    """``prefix``, then zeros as fast as the plug-in reads them (at most ``limit`` bytes)."""

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix)
        zeros, sent = bytes(chunk), 0
        while sent < limit and not stop.is_set():
            conn.sendall(zeros)
            sent += chunk

    return reply


def silence(conn: socket.socket, stop: threading.Event) -> None:
    """Take the request, never answer."""
    stop.wait(60)


def deaf(conn: socket.socket, stop: threading.Event) -> None:
    """Read the request's headers, never its body (the plug-in's sending stalls once the socket buffers fill)."""
    stop.wait(60)


deaf.reads_body = False  # type: ignore[attr-defined]


GOOD_WINDOW = answer_json({"preroll": 1, "lookahead": 0})
GOOD_REPLIES: dict[str, Reply] = {"/frames/window": GOOD_WINDOW, "/frames": answer_json({"frame": FIRST, "seconds": 0}),
                                  "/analyses": answer_json({"id": "abc123"}, 201)}


class FakeBridge:
    """Serves ``replies`` (request path -> Reply; unknown paths get a 404 with an error line) until ``close()``;
    ``requests``: the (method, path) of every request, in order."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def connection(self, **override: Any) -> dict[str, Any]:
        return {"url": self.url, "token": "test-token", "pid": os.getpid(), **override}

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    got = conn.recv(65536)
                    if not got:
                        return
                    data += got
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                reply = self.replies.get(path) or answer_json({"error": f"no fake reply for {path}"}, 404)
                while len(body) < length and getattr(reply, "reads_body", True):
                    got = conn.recv(65536)
                    if not got:
                        return
                    body += got
                self.requests.append((method, path))
                reply(conn, self._stop)
            except OSError:  # the plug-in hung up (as it must, past its deadline)
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)


@dataclass(frozen=True)
class Case:
    """One way a bridge or host misbehaves. ``expect``: words of the one message. ``replies``: the fake bridge's,
    over GOOD_REPLIES (None: no bridge, only ``connection``). ``connection``: the connection file's fields over the
    fake bridge's. ``host``: changes the test host before the call. ``call``: render, frames_needed or analyse.
    ``waits``: the case ends at the request deadline (DEADLINE_S)."""

    name: str
    expect: str
    replies: dict[str, Reply] | None = field(default_factory=dict)
    connection: dict[str, Any] = field(default_factory=dict)
    host: Callable[[Any], None] | None = None
    call: str = "render"
    time: float = FIRST + 1
    window: tuple[int, int, int, int] | None = None
    waits: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _headers(status: str = "200 OK", **lines: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in lines.items())
            + "\r\n").encode()


def _window(preroll: Any, lookahead: Any = 0) -> dict[str, Reply]:
    body = '{"preroll": ' + str(preroll) + ', "lookahead": ' + str(lookahead) + "}"
    return {"/frames/window": answer(200, body.encode())}


def _set(name: str, value: Any) -> Callable[[Any], None]:
    return lambda host: setattr(host, name, value)


def _frame_range(a: float, b: float) -> Callable[[Any], None]:
    def change(host: Any) -> None:
        host.instance.clips["Source"].props.values["OfxImageEffectPropFrameRange"] = [a, b]

    return change


def _huge_window(host: Any) -> None:
    """64 frames of 32768 x 32768 float RGBA to hand over: 1 TiB, more than any /dev/shm holds."""
    host.reported_rod = (0.0, 0.0, 32768.0, 32768.0)
    _frame_range(0, 10000)(host)


WINDOW_BODY = b'{"preroll": 1, "lookahead": 0}'
CASES = [
    # the request deadline: one for the whole request, whatever each read does
    Case("trickled body", "did not answer within 0.5 s", {"/frames/window": trickle(_headers(Content_Length="1000000"))},
         waits=True),
    Case("trickled headers", "did not answer within 0.5 s", {"/frames/window": trickle(b"HTTP/1.1 200 OK\r\n")},
         waits=True),
    Case("no answer at all", "did not answer within 0.5 s", {"/frames/window": silence}, waits=True),
    Case("trickled frame", "did not answer within 0.5 s", {"/frames": trickle(_headers(Content_Length="100"))},
         waits=True),
    Case("unread request", "did not answer within 0.5 s", {"/frames": deaf}, waits=True,
         host=lambda host: host.set("tracks", '{"big": "' + "x" * (32 << 20) + '"}')),
    Case("trickled analysis", "did not answer within 0.5 s", {"/analyses": trickle(b"HTTP/1.1 201 Created\r\n")},
         call="analyse", waits=True),
    Case("bad deadline", "FACEFIX_OFX_TIMEOUT=soon is not a number", env={"FACEFIX_OFX_TIMEOUT": "soon"}),
    Case("zero deadline", "FACEFIX_OFX_TIMEOUT=0 is not a number", env={"FACEFIX_OFX_TIMEOUT": "0"}),
    # the answer's size and Content-Length
    Case("oversize length", "larger than 64 MiB", {"/frames/window": raw(_headers(Content_Length=str(10**9)))}),
    Case("oversize body", "larger than 64 MiB",
         {"/frames/window": flood(_headers(Content_Length=str((64 << 20) + 1)))}),
    Case("oversize length digits", "larger than 64 MiB",
         {"/frames/window": raw(_headers(Content_Length="9" * 40) + WINDOW_BODY)}),
    Case("short body", "cut short of its Content-Length",
         {"/frames/window": raw(_headers(Content_Length="100") + WINDOW_BODY)}),
    Case("long body", "longer than its Content-Length",
         {"/frames/window": raw(_headers(Content_Length="5") + WINDOW_BODY)}),
    Case("no length", "no Content-Length", {"/frames/window": raw(_headers() + WINDOW_BODY)}),
    Case("negative length", "Content-Length is unusable",
         {"/frames/window": raw(_headers(Content_Length="-30") + WINDOW_BODY)}),
    Case("two lengths", "Content-Length is unusable",
         {"/frames/window": answer(200, WINDOW_BODY, "Content-Length: 30\r\nContent-length: 31\r\n")}),
    Case("chunked", "Transfer-Encoding",
         {"/frames/window": raw(_headers(Transfer_Encoding="chunked", Content_Length="30") + WINDOW_BODY)}),
    Case("not http", "not HTTP", {"/frames/window": raw(b"SSH-2.0-OpenSSH\r\n\r\n")}),
    Case("hang up", "closed the connection without an answer", {"/frames/window": raw(b"")}),
    # the bridge's numbers
    Case("pre-roll -1", "pre-roll of -1", _window(-1)),
    Case("pre-roll 10**9", "pre-roll of 1000000000", _window(10**9)),
    Case("pre-roll past a long", "pre-roll of 99999999999999999999", _window("99999999999999999999")),
    Case("pre-roll 2.5", "pre-roll of 2.5", _window(2.5)),
    Case("pre-roll text", "pre-roll of \"4\"", _window('"4"')),
    Case("pre-roll missing", "without a pre-roll", {"/frames/window": answer_json({"lookahead": 0})}),
    Case("look-ahead -3", "look-ahead of -3", _window(0, -3)),
    Case("window too wide", "at most 64 frames", _window(40, 40)),
    Case("analysis id", "without a usable id", {"/analyses": answer_json({"id": "../jobs"}, 201)}, call="analyse"),
    # the connection file
    Case("port 0", "no usable port", connection={"url": "http://127.0.0.1:0"}),
    Case("port 70000", "no usable port", connection={"url": "http://127.0.0.1:70000"}),
    Case("port 65536", "no usable port", connection={"url": "http://127.0.0.1:65536"}),
    Case("port -1", "no usable port", connection={"url": "http://127.0.0.1:-1"}),
    Case("port past an int", "no usable port", connection={"url": "http://127.0.0.1:4294967377"}),
    Case("port with letters", "no usable port", connection={"url": "http://127.0.0.1:80x"}),
    Case("token with a line break", "unusable token", connection={"token": "abc\r\nX-Other: 1"}),
    Case("empty token", "empty token", connection={"token": ""}),
    # the host's times and geometry
    Case("NaN time", "at time nan, which is no frame", time=math.nan),
    Case("infinite time", "at time inf, which is no frame", time=math.inf),
    Case("huge time", "which is no frame", time=1e300),
    Case("time past an int", "which is no frame", time=3e9),
    Case("NaN time, frames needed", "which is no frame", call="frames_needed", time=math.nan),
    Case("NaN time, analyse", "asked to analyse at time nan", call="analyse", time=math.nan),
    Case("NaN region", "region of definition out of range", host=_set("reported_rod", (math.nan, 0.0, 16.0, 12.0))),
    Case("huge region", "region of definition out of range", host=_set("reported_rod", (0.0, 0.0, 1e12, 12.0))),
    Case("wide region", "at most 32768 a side", host=_set("reported_rod", (0.0, 0.0, 40000.0, 12.0))),
    Case("NaN frame range", "frame range out of range", host=_frame_range(math.nan, FIRST + N - 1)),
    Case("huge frame range", "frame range out of range", host=_frame_range(FIRST, 1e300)),
    Case("reversed frame range", "frame range out of range", host=_frame_range(FIRST + 3, FIRST)),
    Case("reversed render window", "render window out of range", window=(10, 0, 0, 12)),
    Case("huge render window", "render window out of range", window=(0, 0, 2**31 - 1, 12)),
    Case("NaN control", "the control strength the value nan at time 1002: not a number",
         host=lambda host: host.set("strength", math.nan)),
    Case("NaN control on a pre-roll frame", "the control strength the value inf at time 1001",
         host=lambda host: host.set_keys("strength", {FIRST: math.inf, FIRST + 1: 0.5})),
    # the plug-in's own limits
    Case("shared memory past /dev/shm", "cannot reserve 1048576 MiB of shared memory", _window(63),
         host=_huge_window),
    Case("cache path too long", "connection file (FACEFIX_CACHE, XDG_CACHE_HOME or HOME) is over 767",
         env={"FACEFIX_CACHE": "/tmp/" + "x" * 800}),
]


def make_host(ofx_host: Any, bundle: str) -> Any:
    """The test host with a tiny float clip and tracks set (the plug-in reads neither before the bridge answers)."""
    pixels = np.linspace(0, 1, N * SIZE[0] * SIZE[1] * 4, dtype=np.float32).reshape(N, *SIZE, 4)
    host = ofx_host.Host(bundle)
    host.source(lambda n: pixels[n - FIRST] if FIRST <= n < FIRST + N else None, ROD, (FIRST, FIRST + N - 1))
    host.set("device", 1)
    host.set("tracks", '{"version": 1, "tracks": []}')
    return host


def call(host: Any, what: str, time_: float, window: tuple[int, int, int, int] | None = None) -> Any:
    if what == "render":
        return host.render(time_, window=window)
    if what == "frames_needed":
        return host.frames_needed(time_)
    return host.press("analyse", time_)


def run_case(ofx_host: Any, bundle: str, case: Case, folder: Path) -> tuple[str, float]:
    """Drive ``case``; (its one message, seconds taken). AssertionError if the plug-in did anything else."""
    folder.mkdir(parents=True, exist_ok=True)
    bridge = FakeBridge({**GOOD_REPLIES, **case.replies}) if case.replies is not None else None
    connection = {**(bridge.connection() if bridge else {"url": "http://127.0.0.1:9", "token": "t"}), **case.connection}
    (folder / "serve.json").write_text(json.dumps(connection))
    env = {"FACEFIX_CACHE": str(folder), "FACEFIX_OFX_TIMEOUT": str(DEADLINE_S) if case.waits else GUARD_S, **case.env}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    host = make_host(ofx_host, bundle)
    try:
        if case.host:
            case.host(host)
        start = time.monotonic()
        try:
            call(host, case.call, case.time, case.window)
        except ofx_host.OfxError as err:
            took = time.monotonic() - start
            assert err.status == 1, f"{case.name}: status {err.status} (kOfxStatFailed is 1): {err}"
            assert len(err.messages) == 1, f"{case.name}: {len(err.messages)} messages: {err.messages}"
            message = err.messages[0]
            assert message.startswith("OfxMessageError: FaceFix: "), f"{case.name}: {message}"
            assert case.expect in message, f"{case.name}: {case.expect!r} not in {message!r}"
            return message, took
        raise AssertionError(f"{case.name}: the plug-in did not fail")
    finally:
        host.close()
        if bridge:
            bridge.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_all(ofx_host: Any, bundle: str, folder: Path) -> list[tuple[str, str, float]]:
    """Every case, in order: (name, message, seconds)."""
    return [(case.name, *run_case(ofx_host, bundle, case, folder / f"case{k}")) for k, case in enumerate(CASES)]
