"""Garbage on the gRPC port, below gRPC: bytes that are not HTTP/2, HTTP/1.1, TLS, HTTP/2 frames
that lie about their length or stop halfway, gRPC calls cut inside their message, connections
closed mid-frame, and many of them at once. After each, the server is up and serving.

A gRPC message whose bytes are not the request is tested in test_undecodable.py."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from tests.fuzz.properties import assert_still_serving, fuzz_settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4
READ_SECONDS = 2.0
"""How long to wait for the server to close a connection we half-closed."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"",
          declared: int | None = None) -> bytes:
    """An HTTP/2 frame; ``declared`` overrides the payload length its header states."""
    length = len(payload) if declared is None else declared
    return length.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def header(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field, not indexed, no Huffman coding (both under 128 bytes)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


GRPC_CALL = frame(HEADERS, END_HEADERS, 1, b"".join(header(name, value) for name, value in (
    (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"localhost"),
    (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
    (b"content-type", b"application/grpc"), (b"te", b"trailers"))))
"""A real ModelInfer call's headers, on stream 1."""
START = PREFACE + frame(SETTINGS, 0, 0)
"""What a client sends first: the preface and its (empty) settings."""


def grpc_message(body: bytes, declared: int | None = None) -> bytes:
    """gRPC's length-prefixed message: not compressed, then the length, then the body."""
    return struct.pack(">BI", 0, len(body) if declared is None else declared) + body


GARBAGE = {
    "every byte value": bytes(range(256)) * 8,
    "an HTTP/1.1 request": b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "an HTTP/1.1 POST to a gRPC method": (
        b"POST /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0"),
    "an HTTP/1.1 upgrade to h2c": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
    "a TLS client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
    "half the preface": PREFACE[:12],
    "the preface, then half a frame header": PREFACE + frame(SETTINGS, 0, 0)[:5],
    "the preface, then a frame cut short": PREFACE + frame(SETTINGS, 0, 0, bytes(18))[:-7],
    "a frame declaring 16 MiB": START + frame(DATA, 0, 1, bytes(64), declared=0xFFFFFF),
    "settings of an odd length": PREFACE + frame(SETTINGS, 0, 0, bytes(5)),
    "an initial window past 2**31 - 1": PREFACE + frame(SETTINGS, 0, 0, b"\0\x04\xff\xff\xff\xff"),
    "a maximum frame size of 4 GiB": PREFACE + frame(SETTINGS, 0, 0, b"\0\x05\xff\xff\xff\xff"),
    "headers of garbage HPACK": START + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff" * 64),
    "headers on stream 0": START + frame(HEADERS, END_HEADERS, 0, b"\x82"),
    "data on a stream never opened": START + frame(DATA, END_STREAM, 7, grpc_message(b"x")),
    "a continuation with no headers": START + frame(CONTINUATION, END_HEADERS, 1, b"\x82"),
    "a window update of zero": START + frame(WINDOW_UPDATE, 0, 0, bytes(4)),
    "a reset of stream 0": START + frame(RST_STREAM, 0, 0, bytes(4)),
    "a thousand pings": START + frame(PING, 0, 0, bytes(8)) * 1_000,
    "a gRPC call with no message": START + GRPC_CALL + frame(DATA, END_STREAM, 1),
    "a gRPC call cut inside its message": START + GRPC_CALL + frame(
        DATA, 0, 1, grpc_message(bytes(10), declared=1_000)),
    "a gRPC message claiming 4 GiB": START + GRPC_CALL + frame(
        DATA, END_STREAM, 1, grpc_message(bytes(10), declared=0xFFFFFFFF)),
    "a gRPC message compressed with no encoding": START + GRPC_CALL + frame(
        DATA, END_STREAM, 1, b"\x01" + grpc_message(b"")[1:]),
}


@contextmanager
def connection(server: ServerProcess) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_SECONDS) as sock:
        yield sock


def send_and_half_close(sock: socket.socket, data: bytes) -> None:
    """Send ``data``, close our side (mid-frame, for a cut frame), read until the server closes
    its side or a short wait ends: it must neither hang on us nor fall over."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass  # the server may hang up on garbage at once, or wait for the rest of a frame


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_on_the_port_leaves_the_server_serving(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, garbage: bytes) -> None:
    with connection(fuzz_server) as sock:
        send_and_half_close(sock, garbage)
    assert_still_serving(fuzz_server, fuzz_client)


@fuzz_settings(share=1 / 3)
@given(prefix=st.sampled_from([b"", PREFACE, START, START + GRPC_CALL]),
       garbage=st.binary(min_size=1, max_size=512))
def test_random_bytes_leave_the_server_serving(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, prefix: bytes,
        garbage: bytes) -> None:
    with connection(fuzz_server) as sock:
        send_and_half_close(sock, prefix + garbage)
    assert_still_serving(fuzz_server, fuzz_client)


def test_many_broken_connections_at_once_leave_the_server_serving(
        fuzz_server: ServerProcess, fuzz_client: AxonClient) -> None:
    """A hundred connections left open mid-frame or mid-call: real calls still get answers;
    then all of them reset at once (SO_LINGER 0), and calls still get answers."""
    pieces = list(GARBAGE.values())
    with ExitStack() as stack:
        for i in range(100):
            sock = stack.enter_context(connection(fuzz_server))
            # Cut each at a different place, and leave it open.
            piece = pieces[i % len(pieces)]
            sock.sendall(piece[:max(1, len(piece) * (i % 7 + 1) // 8)])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for _ in range(3):
            assert_still_serving(fuzz_server, fuzz_client)
    assert_still_serving(fuzz_server, fuzz_client)
