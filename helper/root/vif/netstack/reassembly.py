"""Out-of-order TCP data held beyond a hole, merged into blocks (which are also the SACK blocks we report).

Blocks are ``[start, end, chunks, fin]`` with unwrapped sequence numbers,
sorted, disjoint and not adjacent. A segment extending the newest block, the
usual case during a loss burst, is an append; anything else (overlaps,
duplicates, fills between blocks) rebuilds the blocks it touches, which is
rare. The caller keeps everything within its receive window, so memory is
bounded by the window; ``limit`` bounds the number of holes.
"""

from __future__ import annotations

import bisect
import struct

_SACK_BLOCK = struct.Struct("!II")


def _start(block: list) -> int:
    return block[0]


class OutOfOrder:
    __slots__ = ("blocks", "limit", "recent")

    def __init__(self, limit: int) -> None:
        self.blocks: list[list] = []
        self.limit = limit
        self.recent = 0  # start of the last segment added: its block goes first in SACK

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def clear(self) -> None:
        self.blocks.clear()

    def add(self, seq: int, data: bytes, fin: int) -> bool:
        """Keep a segment starting at ``seq`` (> the receiver's next expected); False if dropped (too many holes)."""
        end = seq + len(data)
        blocks = self.blocks
        self.recent = seq
        if blocks:
            last = blocks[-1]
            if seq == last[1] and not last[3]:
                last[2].append(data)
                last[1] = end
                last[3] = fin
                return True
        i = bisect.bisect_left(blocks, seq, key=_start)
        lo = i - 1 if i > 0 and blocks[i - 1][1] >= seq else i
        if lo < len(blocks) and blocks[lo][0] <= seq and end <= blocks[lo][1]:
            return True  # nothing new
        hi = i
        while hi < len(blocks) and blocks[hi][0] <= end:
            hi += 1
        if lo == hi:
            if len(blocks) >= self.limit:
                return False
            blocks.insert(i, [seq, end, [data], fin])
            return True
        first = min(blocks[lo][0], seq)
        last_end = max(blocks[hi - 1][1], end)
        merged = bytearray(last_end - first)
        merged[seq - first : end - first] = data
        fin_at_end = fin if end == last_end else 0
        for start, stop, chunks, bfin in blocks[lo:hi]:
            merged[start - first : stop - first] = b"".join(chunks)
            if bfin and stop == last_end:
                fin_at_end = bfin
        blocks[lo:hi] = [[first, last_end, [bytes(merged)], fin_at_end]]
        return True

    def take(self, nxt: int) -> tuple[list[bytes], bool]:
        """The data now contiguous from ``nxt`` (removed from here) and whether the app's FIN follows it."""
        blocks = self.blocks
        out: list[bytes] = []
        while blocks and blocks[0][0] <= nxt:
            start, end, chunks, fin = blocks.pop(0)
            if end > nxt:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                out.append(data[nxt - start :] if nxt > start else data)
                nxt = end
            if fin and end == nxt:
                blocks.clear()
                return out, True
        return out, False

    def sack_option(self) -> bytes:
        """A SACK option (RFC 2018) naming up to four blocks, the one holding the latest arrival first."""
        blocks = self.blocks
        i = max(bisect.bisect_right(blocks, self.recent, key=_start) - 1, 0)
        chosen = [blocks[i], *[b for j, b in enumerate(blocks[:4]) if j != i][:3]]
        body = b"".join(_SACK_BLOCK.pack(b[0] & 0xFFFFFFFF, b[1] & 0xFFFFFFFF) for b in chosen)
        return bytes((1, 1, 5, 2 + len(body))) + body
