"""COCO run-length encoded (RLE) masks in pure numpy, including nearest resizing in run space.

SA-1B stores each mask of an image as a COCO *compressed* RLE, ``{"size": [h, w], "counts": str}``.
Decoding ~100 of them at full resolution (about 1500 x 2250) with pycocotools costs hundreds of ms;
these functions decode them straight at a reduced resolution without ever rasterising the full mask.

The format (as pycocotools' ``maskApi.c`` writes it):

* **Runs.** The mask ``[h, w]`` is flattened column-major (Fortran order: flat index ``p = col * h +
  row``) and stored as run lengths alternating 0s and 1s, starting with a run of 0s (which may have
  length 0 when pixel (0, 0) is set). The lengths sum to ``h * w``; an empty 0 x 0 mask is ``[0]``.
* **Delta coding.** Before writing, every count with index ``i > 2`` is replaced by ``x[i] - x[i-2]``
  (runs of the same value tend to have similar lengths). Index 2 itself is *not* delta coded.
* **Characters.** Each (possibly negative) value is written as a little-endian sequence of 5-bit
  groups, one character per group: ``char = 48 + chunk`` where ``chunk`` holds 5 data bits plus the
  continuation bit ``0x20`` (set on all but the last chunk). The value's two's-complement sign is bit
  ``0x10`` of its last chunk; the writer uses as few chunks as possible (LEB128-like, 6 bits/char, so
  the valid characters are ``'0'`` (48) to ``'o'`` (111)).

Nearest resizing (`rle_resize`: ``resize_counts``, ``decode_resized*``): target pixel ``(i, j)`` of ``[h2, w2]``
reads source pixel ``(rows[i], cols[j])`` with ``rows[i] = floor((i + 0.5) * h / h2)`` (pixel centres;
computed exactly in integers) and likewise for ``cols``. Each 1-run of the source is cut at the
sampled source columns it crosses, and the cut row interval ``[a, b)`` becomes the target row interval
``[#rows < a, #rows < b)`` (a table lookup), so the cost grows with the number of runs and the target
size, never with ``h * w``. ``decode_resized_many`` does this for all masks of an image at once
(one decode of the joined strings, one pass over all runs) and then writes the dense masks: large
blob-like masks by unsigned comparisons over their bounding box, small or noise-like ones pixel by
pixel, whichever a small cost model says is cheaper.

Everything is vectorised with numpy: no per-character, per-run or per-pixel Python loops (the only
Python loop is over the masks filled by bounding box, about 10 us each).
"""

from __future__ import annotations

import numpy as np

_CHAR_LO, _CHAR_HI = 48, 111  # '0' .. 'o': 48 + (6-bit chunk)
_MORE = 0x20  # continuation bit of a chunk
_SIGN = 0x10  # sign bit of a value's last chunk
_MAX_CHUNKS = 12  # 60 bits: far beyond any count (pycocotools itself stores counts as uint32)
# A value needs n chunks iff -2**(5n-1) <= x < 2**(5n-1); these are the bounds 2**(5n-1), n = 1..12.
_CHUNK_BOUNDS = np.left_shift(1, 5 * np.arange(1, _MAX_CHUNKS + 1) - 1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Compressed strings <-> run lengths.

def _as_bytes(s: str | bytes) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def segment_index(lengths: np.ndarray) -> np.ndarray:
    """[S] segment lengths -> [sum] position of each element inside its segment (0, 1, .., 0, 1, ..)."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)


def _check_chars(buf: np.ndarray, str_ends: np.ndarray) -> None:
    """ValueError at the first byte outside '0'..'o', naming the string and position."""
    bad = np.flatnonzero((buf < _CHAR_LO) | (buf > _CHAR_HI))
    if bad.size:
        p = int(bad[0])
        k = int(np.searchsorted(str_ends, p, side="right"))  # which string holds byte p
        pos = p - (int(str_ends[k - 1]) if k else 0)
        raise ValueError(f"invalid character {chr(buf[p])!r} (byte {buf[p]}) at position {pos} of RLE "
                         f"string {k}: compressed COCO RLE uses only '0'..'o' (bytes 48..111)")


def _chars_to_values(c: np.ndarray, str_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [n] (chars - 48) of S strings ending at `str_ends` [S] -> (values [V], values per string [S])."""
    last = (c & _MORE) == 0  # [n] True on the final chunk of each value
    nonempty = np.flatnonzero(np.diff(str_ends, prepend=0) > 0)
    cut = ~last[str_ends[nonempty] - 1]  # a string whose last char still says "more"
    if cut.any():
        k = int(nonempty[np.flatnonzero(cut)[0]])
        raise ValueError(f"truncated RLE string {k}: its last character has the continuation bit 0x20 set, "
                         "so its final value is incomplete")
    ends = np.flatnonzero(last)  # [V] index of each value's last chunk
    nchunks = np.diff(ends, prepend=-1)  # [V] chunks per value
    if nchunks.size and nchunks.max() > _MAX_CHUNKS:
        raise ValueError(f"RLE value of {int(nchunks.max())} characters: more than {_MAX_CHUNKS} (60 bits)")
    # Little-endian 5-bit groups: chunk k of a value contributes (chunk & 0x1f) << 5k.
    shift = 5 * segment_index(nchunks)
    data = (c & 0x1F).astype(np.int64) << shift
    # Sum each value's chunks as differences of a running sum taken at value ends (exact even if the
    # running sum wraps around int64: the differences are computed modulo 2**64 and are < 2**60).
    values = np.diff(np.cumsum(data)[ends], prepend=0)
    # Two's complement: a set sign bit in the last chunk means the value is x - 2**(5 * nchunks).
    negative = (c[ends] & _SIGN) != 0
    values -= np.where(negative, np.left_shift(1, 5 * nchunks), 0)
    # Values per string: count the value ends up to each string end.
    done = np.concatenate([[0], np.cumsum(last)])[str_ends]
    return values, np.diff(done, prepend=0)


def _undelta(x: np.ndarray, nvals: np.ndarray) -> np.ndarray:
    """Undo the delta coding per string: cnt[i] = x[i] + cnt[i-2] for i > 2 ([V] values, [S] lengths)."""
    li = segment_index(nvals)  # index of each value inside its string
    counts = x.copy()
    # Two running sums per string: over odd indices (1, 3, 5, ..) and over even indices from 2 (2, 4, ..);
    # index 0 stands alone. Each is a cumulative sum restarted at the string's first element of the stream.
    for parity, first in ((1, 1), (0, 2)):
        sel = np.flatnonzero(((li & 1) == parity) & (li >= first))
        if not sel.size:
            continue
        v = x[sel]
        cs = np.cumsum(v)
        restart = li[sel] == first  # [len(sel)] first element of a string's stream
        base = (cs - v)[restart]  # running sum just before each restart
        counts[sel] = cs - base[np.cumsum(restart) - 1]
    return counts


def _decode_strings(strings: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """S compressed strings -> (all run lengths concatenated int64 [R], runs per string [S])."""
    str_ends = np.cumsum([len(s) for s in strings], dtype=np.int64)  # [S] exclusive end in the joined buffer
    buf = np.frombuffer(b"".join(strings), dtype=np.uint8)
    _check_chars(buf, str_ends)
    values, nvals = _chars_to_values(buf - _CHAR_LO, str_ends)
    return _undelta(values, nvals), nvals


def decode_counts(s: str | bytes) -> np.ndarray:
    """Compressed COCO RLE string -> run lengths, int64 [R] (column-major, starting with a 0-run).

    ValueError for characters outside '0'..'o' or a truncated last value. Counts are not checked
    against a size here (see `counts_to_mask`)."""
    counts, _ = _decode_strings([_as_bytes(s)])
    return counts


def encode_counts(counts: np.ndarray) -> str:
    """Run lengths [R] -> compressed COCO RLE string, identical to pycocotools' ``rleToString``."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    # Delta coding: x[i] = c[i] - c[i-2] for i > 2.
    x = c.copy()
    x[3:] -= c[1:-2]
    # Fewest chunks n with -2**(5n-1) <= x < 2**(5n-1); ~x maps negatives onto the same test as x >= 0.
    mag = np.where(x < 0, ~x, x)
    nchunks = 1 + np.searchsorted(_CHUNK_BOUNDS, mag, side="right")
    # Chunk k of a value is bits 5k..5k+4 (arithmetic shift keeps the sign), plus 0x20 unless last.
    k = segment_index(nchunks)
    chunk = (np.repeat(x, nchunks) >> (5 * k)) & 0x1F
    more = k < np.repeat(nchunks - 1, nchunks)
    chars = (_CHAR_LO + chunk + _MORE * more).astype(np.uint8)
    return chars.tobytes().decode("ascii")


# ----------------------------------------------------------------------------------------------
# Run lengths <-> dense masks.

def as_counts(counts: str | bytes | np.ndarray) -> np.ndarray:
    if isinstance(counts, str | bytes | bytearray):
        return decode_counts(counts)
    return np.asarray(counts, dtype=np.int64).ravel()


def check_counts(counts: np.ndarray, nvals: np.ndarray, h: int, w: int) -> None:
    """ValueError unless every mask's counts (concatenated [R], per mask [N]) are >= 0 and sum to h * w."""
    if counts.size and counts.min() < 0:
        i = int(np.flatnonzero(counts < 0)[0])
        raise ValueError(f"negative RLE count {int(counts[i])} at run {i}")
    sums = np.diff(np.concatenate([[0], np.cumsum(counts)])[np.cumsum(nvals)], prepend=0)  # [N]
    wrong = np.flatnonzero(sums != h * w)
    if wrong.size:
        k = int(wrong[0])
        raise ValueError(f"RLE counts of mask {k} sum to {int(sums[k])}, but size {h}x{w} has {h * w} pixels")


def mask_to_counts(mask: np.ndarray) -> np.ndarray:
    """Binary mask [h, w] -> run lengths int64 [R], column-major, starting with a (maybe empty) 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)  # pycocotools writes [0] for an empty mask
    # Run boundaries: 0, every index where the value changes, and the end.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).astype(np.int64)
    return np.concatenate([[0], counts]) if flat[0] else counts


def counts_to_mask(counts: str | bytes | np.ndarray, h: int, w: int) -> np.ndarray:
    """Run lengths [R] (or a compressed string) -> bool mask [h, w] (Fortran-ordered, like pycocotools).

    ValueError if sum(counts) != h * w or any count < 0."""
    c = as_counts(counts)
    check_counts(c, np.array([c.size]), h, w)
    values = (np.arange(c.size) & 1).astype(bool)  # runs alternate 0, 1, 0, ...
    return np.repeat(values, c).reshape(w, h).T  # column-major flat -> [h, w]


def area(counts: str | bytes | np.ndarray) -> int:
    """Number of set pixels: the sum of the 1-runs (odd positions)."""
    return int(as_counts(counts)[1::2].sum())


def joined_counts(rles: list[str | bytes | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """N masks (strings or run lengths) -> (all run lengths concatenated [R], runs per mask [N])."""
    if all(isinstance(r, str | bytes | bytearray) for r in rles):
        return _decode_strings([_as_bytes(r) for r in rles])
    parts = [as_counts(r) for r in rles]
    return np.concatenate(parts), np.array([p.size for p in parts], dtype=np.int64)


def areas(counts: np.ndarray, nvals: np.ndarray) -> np.ndarray:
    """Set pixels per mask [N] of joined run lengths [R] with `nvals` [N] runs each."""
    odd = (segment_index(nvals) & 1).astype(bool)
    mask_of_run = np.repeat(np.arange(nvals.size), nvals)
    return np.bincount(mask_of_run[odd], weights=counts[odd], minlength=nvals.size).astype(np.int64)


def encode_many(counts: np.ndarray, nvals: np.ndarray) -> list[bytes]:
    """Joined run lengths [R] of N masks (`nvals` [N] runs each) -> N compressed strings (bytes),
    identical to `encode_counts` of each, in one vectorised pass."""
    c = np.asarray(counts, dtype=np.int64)
    li = segment_index(nvals)  # index of each run inside its mask
    x = c.copy()
    d = np.flatnonzero(li >= 3)
    x[d] -= c[d - 2]  # delta coding inside each mask
    mag = np.where(x < 0, ~x, x)
    nchunks = 1 + np.searchsorted(_CHUNK_BOUNDS, mag, side="right")
    kk = segment_index(nchunks)
    chunk = (np.repeat(x, nchunks) >> (5 * kk)) & 0x1F
    more = kk < np.repeat(nchunks - 1, nchunks)
    buf = (_CHAR_LO + chunk + _MORE * more).astype(np.uint8).tobytes()
    chars = np.bincount(np.repeat(np.arange(nvals.size), nvals), weights=nchunks, minlength=nvals.size)
    ends = np.cumsum(chars.astype(np.int64))
    return [buf[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]).tolist(), ends.tolist(), strict=True)]
