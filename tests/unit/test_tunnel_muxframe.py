"""The tunnel mux's frame codec: the byte layout, incremental decoding, and refusing malformed frames."""

import os
import struct

import pytest

from tether.manager.api import muxframe as mf
from tether.manager.api.muxframe import FrameDecoder, MuxProtocolError


def raw(stream: int, ftype: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """A frame built by hand, so the tests do not trust the encoder they check."""
    size = len(payload) if length is None else length
    return struct.pack("!IB", stream, ftype) + size.to_bytes(3, "big") + payload


def test_the_header_is_stream_type_and_length_big_endian():
    assert mf.frame(5, mf.DATA, b"ab") == b"\x00\x00\x00\x05\x07\x00\x00\x02ab"
    assert mf.window(0x01020304, 65536) == b"\x01\x02\x03\x04\x08\x00\x00\x04\x00\x01\x00\x00"
    assert mf.end(9) == b"\x00\x00\x00\x09\x09\x00\x00\x00"
    assert mf.hello("s1") == b"\x00\x00\x00\x00\x01\x00\x00\x03\x02s1"
    assert mf.welcome() == raw(0, mf.WELCOME, bytes((mf.VERSION,)))
    assert mf.header(7, mf.DATA, 300_000) == raw(7, mf.DATA, length=300_000)


def test_every_encoder_decodes_back():
    frames = [
        mf.hello("0123abcd"),
        mf.welcome(),
        mf.ping(b"12345678"),
        mf.pong(b"87654321"),
        mf.frame(1, mf.MESSAGE, b"\x0a\x00"),
        mf.frame(1, mf.DATA, b""),
        mf.frame(2, mf.DATA, os.urandom(mf.MAX_DATA)),
        mf.window(2, mf.STREAM_WINDOW),
        mf.end(2),
        mf.reset(3, "gone"),
        mf.goaway("bye"),
    ]
    decoded = FrameDecoder().feed(b"".join(frames))
    assert [(s, t) for s, t, _ in decoded] == [
        (0, mf.HELLO), (0, mf.WELCOME), (0, mf.PING), (0, mf.PONG), (1, mf.MESSAGE), (1, mf.DATA), (2, mf.DATA),
        (2, mf.WINDOW), (2, mf.END), (3, mf.RESET), (0, mf.GOAWAY),
    ]  # fmt: skip
    assert [frame[8:] for frame in frames] == [payload for _, _, payload in decoded]
    assert mf.parse_hello(decoded[0][2]) == (mf.VERSION, "0123abcd")
    assert mf.parse_window(decoded[7][2]) == mf.STREAM_WINDOW
    assert mf.parse_reason(decoded[9][2]) == "gone"


@pytest.mark.parametrize("step", [1, 3, 7, 8, 9, 1000, 65536])
def test_frames_split_anywhere_between_reads_come_out_whole(step):
    big = os.urandom(200_000)
    stream = b"".join([mf.frame(1, mf.DATA, b"x"), mf.frame(3, mf.DATA, big), mf.end(3), mf.ping(b"abcdefgh")])
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), step):
        out += decoder.feed(stream[i : i + step])
    assert out == [(1, mf.DATA, b"x"), (3, mf.DATA, big), (3, mf.END, b""), (0, mf.PING, b"abcdefgh")]
    assert decoder.pending == 0


def test_a_partial_frame_is_held_until_it_completes():
    decoder = FrameDecoder()
    frame = mf.frame(4, mf.DATA, b"hello")
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(frame[5:10]) == []
    assert decoder.pending == 2  # the header has been read; two payload bytes wait
    assert decoder.feed(frame[10:] + frame[:2]) == [(4, mf.DATA, b"hello")]
    assert decoder.feed(frame[2:]) == [(4, mf.DATA, b"hello")]


def test_long_reasons_are_cut_on_a_character_boundary():
    payload = mf.reset(1, "é" * 5000)[8:]
    assert len(payload) <= mf.MAX_REASON
    assert mf.parse_reason(payload) == "é" * (len(payload) // 2)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (raw(1, 0), "unknown frame type 0"),
        (raw(1, 11), "unknown frame type 11"),
        (raw(1, 255), "unknown frame type 255"),
        (raw(1, mf.DATA, length=mf.MAX_DATA + 1), "DATA frame of 262145 bytes"),
        (raw(1, mf.MESSAGE, length=mf.MAX_MESSAGE + 1), "MESSAGE frame of 65537 bytes"),
        (raw(0, mf.HELLO, length=1 + mf.MAX_SESSION_ID + 1), "HELLO frame of 258 bytes"),
        (raw(0, mf.GOAWAY, length=0xFFFFFF), "GOAWAY frame of 16777215 bytes"),
        (raw(1, mf.WINDOW, b"\x00\x00\x01"), "WINDOW frame of 3 bytes"),
        (raw(0, mf.PING, b"1234567"), "PING frame of 7 bytes"),
        (raw(1, mf.END, b"x"), "END frame of 1 bytes"),
        (raw(0, mf.WELCOME, b""), "WELCOME frame of 0 bytes"),
        (raw(0, mf.DATA, b"x"), "DATA frame on stream 0"),
        (raw(0, mf.MESSAGE, b"x"), "MESSAGE frame on stream 0"),
        (raw(0, mf.RESET, b""), "RESET frame on stream 0"),
        (raw(2, mf.HELLO, b"\x01s"), "HELLO frame on stream 2"),
        (raw(2, mf.PING, b"12345678"), "PING frame on stream 2"),
    ],
)
def test_malformed_headers_are_refused_before_their_payload_arrives(frame, message):
    decoder = FrameDecoder()
    with pytest.raises(MuxProtocolError, match=message):
        decoder.feed(frame[: mf.HEADER_SIZE])  # the header alone decides
    with pytest.raises(MuxProtocolError, match="already broke"):
        decoder.feed(mf.end(1))  # a broken stream stays broken: there is no resynchronizing


def test_good_frames_before_a_bad_one_are_not_returned_with_it():
    decoder = FrameDecoder()
    with pytest.raises(MuxProtocolError):
        decoder.feed(mf.end(1) + raw(1, 42))


@pytest.mark.parametrize(
    ("parse", "payload", "message"),
    [
        (mf.parse_window, b"\x00\x00\x00\x00", "window update of 0"),
        (mf.parse_hello, b"\x01", "without a session id"),
        (mf.parse_hello, b"", "without a session id"),
        (mf.parse_hello, b"\x01\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_payloads_are_refused(parse, payload, message):
    with pytest.raises(MuxProtocolError, match=message):
        parse(payload)


def test_encoders_refuse_what_the_decoder_would():
    with pytest.raises(ValueError, match="session id"):
        mf.hello("")
    with pytest.raises(ValueError, match="session id"):
        mf.hello("x" * (mf.MAX_SESSION_ID + 1))


def test_random_bytes_never_raise_anything_but_a_protocol_error():
    rng = __import__("random").Random(7)
    for _ in range(2000):
        decoder = FrameDecoder()
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            for stream, ftype, payload in decoder.feed(data):
                assert ftype in set(mf.FrameType) and len(payload) <= mf.MAX_DATA
                assert (stream == 0) == (ftype in mf.CONNECTION_TYPES)
        except MuxProtocolError:
            pass


def test_the_window_holds_several_full_data_frames():
    # A bulk flow must keep frames in flight while credit comes back in steps.
    assert mf.STREAM_WINDOW >= 2 * mf.MAX_DATA
    assert mf.STREAM_WINDOW - mf.WINDOW_UPDATE_STEP >= mf.MAX_DATA
