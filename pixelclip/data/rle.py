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

Nearest resizing (``resize_counts``, ``decode_resized*``): target pixel ``(i, j)`` of ``[h2, w2]``
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

from functools import lru_cache

import numpy as np

_CHAR_LO, _CHAR_HI = 48, 111  # '0' .. 'o': 48 + (6-bit chunk)
_MORE = 0x20  # continuation bit of a chunk
_SIGN = 0x10  # sign bit of a value's last chunk
_MAX_CHUNKS = 12  # 60 bits: far beyond any count (pycocotools itself stores counts as uint32)
# A value needs n chunks iff -2**(5n-1) <= x < 2**(5n-1); these are the bounds 2**(5n-1), n = 1..12.
_CHUNK_BOUNDS = np.left_shift(1, 5 * np.arange(1, _MAX_CHUNKS + 1) - 1).astype(np.int64)
# decode_resized_many writes each mask either pixel by pixel or by comparisons over its bounding box,
# once per "layer" (k-th piece of each column), whichever this cost model (ns, measured on a 2-core
# x86 VM) says is cheaper: box = fixed + per layer (call + per box pixel), scatter = per set pixel.
_BOX_NS, _BOX_LAYER_NS, _BOX_PIXEL_NS, _SCATTER_PIXEL_NS = 6000.0, 1500.0, 0.3, 3.0


# ----------------------------------------------------------------------------------------------
# Compressed strings <-> run lengths.

def _as_bytes(s: str | bytes) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def _segment_index(lengths: np.ndarray) -> np.ndarray:
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
    shift = 5 * _segment_index(nchunks)
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
    li = _segment_index(nvals)  # index of each value inside its string
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
    k = _segment_index(nchunks)
    chunk = (np.repeat(x, nchunks) >> (5 * k)) & 0x1F
    more = k < np.repeat(nchunks - 1, nchunks)
    chars = (_CHAR_LO + chunk + _MORE * more).astype(np.uint8)
    return chars.tobytes().decode("ascii")


# ----------------------------------------------------------------------------------------------
# Run lengths <-> dense masks.

def _as_counts(counts: str | bytes | np.ndarray) -> np.ndarray:
    if isinstance(counts, str | bytes | bytearray):
        return decode_counts(counts)
    return np.asarray(counts, dtype=np.int64).ravel()


def _check_counts(counts: np.ndarray, nvals: np.ndarray, h: int, w: int) -> None:
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
    c = _as_counts(counts)
    _check_counts(c, np.array([c.size]), h, w)
    values = (np.arange(c.size) & 1).astype(bool)  # runs alternate 0, 1, 0, ...
    return np.repeat(values, c).reshape(w, h).T  # column-major flat -> [h, w]


def area(counts: str | bytes | np.ndarray) -> int:
    """Number of set pixels: the sum of the 1-runs (odd positions)."""
    return int(_as_counts(counts)[1::2].sum())


# ----------------------------------------------------------------------------------------------
# Nearest resizing in run space.

@lru_cache(maxsize=64)
def _sampling(n: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sampling of n source pixels by n2 target pixels, along one axis.

    Returns (src [n2]: the source index read by each target index, floor((i + 0.5) * n / n2) in exact
    integers; first [n + 1]: first[r] = number of target indices reading a source index < r, so the
    target indices reading source [a, b) are first[a] .. first[b] - 1)."""
    if n <= 0 or n2 <= 0:
        raise ValueError(f"sizes must be positive, got {n} -> {n2}")
    src = ((2 * np.arange(n2, dtype=np.int64) + 1) * n) // (2 * n2)
    first = np.searchsorted(src, np.arange(n + 1), side="left").astype(np.int64)
    src.flags.writeable = first.flags.writeable = False
    return src, first


def _one_runs(counts: np.ndarray, nvals: np.ndarray, hw: int) -> tuple[np.ndarray, ...]:
    """Concatenated runs [R] of masks with nvals [N] runs each -> the non-empty 1-runs as
    (mask id [K], start [K], end [K]), start/end flat column-major indices inside their mask."""
    ends = np.cumsum(counts)  # flat end of each run, masks laid end to end (each sums to hw)
    odd = (_segment_index(nvals) & 1).astype(bool)  # odd run index inside its mask = run of 1s
    idx = np.flatnonzero(odd & (counts > 0))
    end = ends[idx]
    mask_id = (end - 1) // hw  # a non-empty run ends in (m * hw, (m + 1) * hw] for mask m
    end -= mask_id * hw  # back to mask-local flat indices
    return mask_id, end - counts[idx], end


def _index_sampling(src: np.ndarray, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Like `_sampling`, for given non-decreasing source indices src [n2] into [0, n)."""
    src = np.asarray(src, dtype=np.int64)
    if src.size and (src[0] < 0 or src[-1] >= n or bool(np.any(src[1:] < src[:-1]))):
        raise ValueError(f"{what} indices must be non-decreasing and inside [0, {n})")
    return src, np.searchsorted(src, np.arange(n + 1), side="left").astype(np.int64)


def _pieces(mask_id, start, end, h: int, row_sampling, col_sampling) -> tuple[np.ndarray, ...]:
    """1-runs (mask id, flat start, flat end) [K] -> the target column pieces they produce:
    (mask id, target column j, first target row, end target row) [P], non-empty, disjoint per column.
    row_sampling / col_sampling: (src, first) pairs of `_sampling` or `_index_sampling`."""
    _, row_first = row_sampling
    cols, col_first = col_sampling
    # Source columns spanned by each run, then the target columns that sample any of them.
    ja = col_first[start // h]
    jb = col_first[(end - 1) // h + 1]
    reps = jb - ja  # [K] target columns per run (0 when the run lies in unsampled columns)
    run = np.repeat(np.arange(start.size), reps)  # [P] run of each piece
    j = np.repeat(ja, reps) + _segment_index(reps)  # [P] target column of each piece
    # Clip the run to the sampled source column, in rows [a, b); map to target rows via the table.
    top = cols[j] * h  # flat index of that column's row 0
    a = np.maximum(start[run] - top, 0)
    b = np.minimum(end[run] - top, h)
    ia, ib = row_first[a], row_first[b]
    keep = ia < ib  # runs falling between sampled rows give nothing
    return mask_id[run][keep], j[keep], ia[keep], ib[keep]


def _runs_from_intervals(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
    """Disjoint non-empty 1-intervals [K] (flat, any order) -> run lengths over `total` pixels."""
    if not starts.size:
        return np.array([total], dtype=np.int64)  # all zeros: a single 0-run
    starts, ends = np.sort(starts, kind="stable"), np.sort(ends, kind="stable")  # disjoint: sorts pair up
    touch = ends[:-1] == starts[1:]  # an interval ending where the next starts: merge the two
    starts = starts[np.concatenate([[True], ~touch])]
    ends = ends[np.concatenate([~touch, [True]])]
    # Boundaries 0, s0, e0, s1, e1, ..., total -> alternating 0-run / 1-run lengths.
    bounds = np.concatenate([[0], np.stack([starts, ends], axis=1).ravel(), [total]])
    counts = np.diff(bounds)
    return counts[:-1] if counts.size > 1 and counts[-1] == 0 else counts  # no trailing empty 0-run


def resize_counts(counts: str | bytes | np.ndarray, size: tuple[int, int],
                  new_size: tuple[int, int]) -> np.ndarray:
    """Nearest resize in run space: run lengths of a [h, w] mask -> run lengths int64 [R2] of the
    [h2, w2] mask (column-major, starting with a 0-run). Target (i, j) reads source
    (floor((i + 0.5) h / h2), floor((j + 0.5) w / w2)). Cost O(#runs + h + w + h2 + w2); the source
    mask is never rasterised."""
    (h, w), (h2, w2) = size, new_size
    c = _as_counts(counts)
    nvals = np.array([c.size])
    _check_counts(c, nvals, h, w)
    _, j, ia, ib = _pieces(*_one_runs(c, nvals, h * w), h, _sampling(h, h2), _sampling(w, w2))
    # A piece covers flat target indices j * h2 + [ia, ib).
    return _runs_from_intervals(j * h2 + ia, j * h2 + ib, h2 * w2)


def _scatter(out: np.ndarray, mask_id, j, ia, ib) -> None:
    """Set the pixels of column pieces [P] in out [n, h2, w2] one by one (cost ~ number of pixels)."""
    _, h2, w2 = out.shape
    length = ib - ia
    top = mask_id * (h2 * w2) + ia * w2 + j  # flat index of each piece's first pixel
    # Pixel t of a piece lies t rows (t * w2 flat) below its first pixel.
    out.reshape(-1)[np.repeat(top, length) + _segment_index(length) * w2] = True


def _fill_box(view: np.ndarray, j, ia, ib, layer, rows: np.ndarray) -> None:
    """Fill one mask's pieces [P] inside its bounding box `view` [bh, bw] by comparisons.

    `j` are columns relative to the box, `rows` [bh, 1] the box's target row numbers (unsigned), `layer`
    the rank of each piece within its column. Per layer: pixel (r, c) is set iff r - top[c] < len[c] in
    unsigned arithmetic (r < top wraps around to a huge number), a vectorised test over the whole box."""
    n_layers, bw = int(layer.max()) + 1, view.shape[1]
    top = np.zeros((n_layers, bw), dtype=rows.dtype)
    length = np.zeros((n_layers, bw), dtype=rows.dtype)  # 0: no piece in this layer of that column
    top[layer, j] = ia
    length[layer, j] = ib - ia
    np.less(rows - top[0], length[0], out=view)
    for k in range(1, n_layers):
        view |= (rows - top[k]) < length[k]


def _fill(mask_id, j, ia, ib, n: int, h2: int, w2: int) -> np.ndarray:
    """Column pieces [P] (disjoint per column) -> dense bool [n, h2, w2] (C order).

    Large blob-like masks are filled by comparisons over their bounding box (`_fill_box`), small or
    noise-like ones (many pieces per column) pixel by pixel (`_scatter`), per the cost model above."""
    out = np.zeros((n, h2, w2), dtype=bool)
    # Group pieces by (mask, column); a stable sort keeps each column's pieces top to bottom.
    order = np.argsort(mask_id * w2 + j, kind="stable")
    mask_id, j, ia, ib = mask_id[order], j[order], ia[order], ib[order]
    col = mask_id * w2 + j
    col_start = np.flatnonzero(np.concatenate([[True], col[1:] != col[:-1]]))  # first piece of each column
    layer = _segment_index(np.diff(col_start, append=col.size))  # rank of each piece inside its column
    # Per mask present: its slice of pieces [a, b), bounding box, layers and set pixels.
    first = np.searchsorted(mask_id, np.arange(n + 1))  # pieces of mask m: first[m]:first[m + 1]
    masks = np.flatnonzero(np.diff(first) > 0)
    a, b = first[masks], first[masks + 1]
    r0, r1 = np.minimum.reduceat(ia, a), np.maximum.reduceat(ib, a)
    c0, c1 = j[a], j[b - 1] + 1  # columns are sorted inside a mask
    n_layers = np.maximum.reduceat(layer, a) + 1
    pixels = np.add.reduceat(ib - ia, a)
    box_ns = _BOX_NS + n_layers * (_BOX_LAYER_NS + _BOX_PIXEL_NS * (r1 - r0) * (c1 - c0))
    use_box = box_ns < _SCATTER_PIXEL_NS * pixels
    rows = np.arange(h2, dtype=np.uint16 if h2 < 2**16 else np.uint32)[:, None]
    for k in np.flatnonzero(use_box):
        m, s, e = masks[k], a[k], b[k]
        _fill_box(out[m, r0[k]:r1[k], c0[k]:c1[k]], j[s:e] - c0[k], ia[s:e], ib[s:e], layer[s:e], rows[r0[k]:r1[k]])
    if not use_box.all():
        sel = np.repeat(~use_box, b - a)  # pieces of the masks left to scatter
        _scatter(out, mask_id[sel], j[sel], ia[sel], ib[sel])
    return out


def decode_resized_many(rles: list[str | bytes | np.ndarray], size: tuple[int, int],
                        new_size: tuple[int, int]) -> np.ndarray:
    """N masks of one [h, w] image (compressed strings or run lengths) -> bool [N, h2, w2], C order.

    Same sampling as `resize_counts`; all masks are processed together (one decode of the joined
    strings, one pass over all runs), never at full resolution. ValueError for bad strings or counts."""
    (h, w), (h2, w2) = size, new_size
    return _decode_sampled(rles, size, _sampling(h, h2), _sampling(w, w2))


def sample_many(rles: list[str | bytes | np.ndarray], size: tuple[int, int], rows: np.ndarray,
                cols: np.ndarray) -> np.ndarray:
    """N masks of one [h, w] image -> bool [N, len(rows), len(cols)]: pixel (i, j) is source pixel
    (rows[i], cols[j]). rows and cols must be non-decreasing indices inside the image. Like
    `decode_resized_many`, only the sampled pixels are ever rasterised."""
    h, w = size
    return _decode_sampled(rles, size, _index_sampling(rows, h, "row"), _index_sampling(cols, w, "column"))


def _joined_counts(rles: list[str | bytes | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """N masks (strings or run lengths) -> (all run lengths concatenated [R], runs per mask [N])."""
    if all(isinstance(r, str | bytes | bytearray) for r in rles):
        return _decode_strings([_as_bytes(r) for r in rles])
    parts = [_as_counts(r) for r in rles]
    return np.concatenate(parts), np.array([p.size for p in parts], dtype=np.int64)


def resize_many(rles: list[str | bytes | np.ndarray], size: tuple[int, int],
                new_size: tuple[int, int]) -> list[np.ndarray]:
    """`resize_counts` for the N masks of one image in one pass over all their runs (one decode of
    the joined strings). Returns N run-length arrays at `new_size`. ValueError for bad strings or
    counts that do not fit `size`."""
    counts, nvals = resize_joined(rles, size, new_size)
    return np.split(counts, np.cumsum(nvals)[:-1]) if len(nvals) else []


def resize_joined(rles: list[str | bytes | np.ndarray], size: tuple[int, int],
                  new_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Like `resize_many`, with no per-mask Python work: (run lengths of all N resized masks
    concatenated [R2], runs per mask [N]); feed them to `encode_many` or `areas`."""
    (h, w), (h2, w2) = size, new_size
    n, total = len(rles), h2 * w2
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    counts, nvals = _joined_counts(rles)
    _check_counts(counts, nvals, h, w)
    mask_id, j, ia, ib = _pieces(*_one_runs(counts, nvals, h * w), h, _sampling(h, h2), _sampling(w, w2))
    # Flat target 1-intervals, sorted by (mask, start); disjoint inside a mask, so ends sort alike.
    key_s, key_e = mask_id * total + j * h2 + ia, mask_id * total + j * h2 + ib
    order = np.argsort(key_s, kind="stable")
    mid, start, end = mask_id[order], key_s[order] - mask_id[order] * total, key_e[order] - mask_id[order] * total
    # Merge intervals that touch (the end of one is the start of the next, same mask).
    touch = (end[:-1] == start[1:]) & (mid[:-1] == mid[1:])
    keep_s, keep_e = np.concatenate([[True], ~touch]), np.concatenate([~touch, [True]])
    mid, start, end = mid[keep_s], start[keep_s], end[keep_e]
    k = np.bincount(mid, minlength=n)  # [N] intervals per mask
    first = np.concatenate([[0], np.cumsum(k)[:-1]])  # [N] index of each mask's first interval
    local = np.arange(mid.size) - first[mid]  # rank of each interval in its mask
    prev_end = np.where(local > 0, np.concatenate([[0], end[:-1]]), 0)
    # Runs per mask: gap0, len0, gap1, len1, ..., trailing 0-run (dropped when empty and k > 0).
    last_end = np.zeros(n, dtype=np.int64)
    last_end[mid] = end  # sorted by start: the last write per mask is its last interval
    trailing = total - last_end
    n_runs = 2 * k + 1 - ((trailing == 0) & (k > 0))
    offset = np.concatenate([[0], np.cumsum(n_runs)[:-1]])
    out = np.zeros(int(n_runs.sum()), dtype=np.int64)
    pos = offset[mid] + 2 * local
    out[pos] = start - prev_end
    out[pos + 1] = end - start
    has_tail = ~((trailing == 0) & (k > 0))
    out[(offset + 2 * k)[has_tail]] = trailing[has_tail]
    return out, n_runs


def areas(counts: np.ndarray, nvals: np.ndarray) -> np.ndarray:
    """Set pixels per mask [N] of joined run lengths [R] with `nvals` [N] runs each."""
    odd = (_segment_index(nvals) & 1).astype(bool)
    mask_of_run = np.repeat(np.arange(nvals.size), nvals)
    return np.bincount(mask_of_run[odd], weights=counts[odd], minlength=nvals.size).astype(np.int64)


def encode_many(counts: np.ndarray, nvals: np.ndarray) -> list[bytes]:
    """Joined run lengths [R] of N masks (`nvals` [N] runs each) -> N compressed strings (bytes),
    identical to `encode_counts` of each, in one vectorised pass."""
    c = np.asarray(counts, dtype=np.int64)
    li = _segment_index(nvals)  # index of each run inside its mask
    x = c.copy()
    d = np.flatnonzero(li >= 3)
    x[d] -= c[d - 2]  # delta coding inside each mask
    mag = np.where(x < 0, ~x, x)
    nchunks = 1 + np.searchsorted(_CHUNK_BOUNDS, mag, side="right")
    kk = _segment_index(nchunks)
    chunk = (np.repeat(x, nchunks) >> (5 * kk)) & 0x1F
    more = kk < np.repeat(nchunks - 1, nchunks)
    buf = (_CHAR_LO + chunk + _MORE * more).astype(np.uint8).tobytes()
    chars = np.bincount(np.repeat(np.arange(nvals.size), nvals), weights=nchunks, minlength=nvals.size)
    ends = np.cumsum(chars.astype(np.int64))
    return [buf[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]).tolist(), ends.tolist(), strict=True)]


def _decode_sampled(rles, size, row_sampling, col_sampling) -> np.ndarray:
    h, w = size
    h2, w2 = row_sampling[0].size, col_sampling[0].size
    if not rles:
        return np.zeros((0, h2, w2), dtype=bool)
    counts, nvals = _joined_counts(rles)
    _check_counts(counts, nvals, h, w)
    pieces = _pieces(*_one_runs(counts, nvals, h * w), h, row_sampling, col_sampling)
    if not pieces[0].size or not h2 or not w2:
        return np.zeros((len(rles), h2, w2), dtype=bool)
    return _fill(*pieces, len(rles), h2, w2)


def decode_resized(counts: str | bytes | np.ndarray, size: tuple[int, int],
                   new_size: tuple[int, int]) -> np.ndarray:
    """One mask (compressed string or run lengths) of size [h, w] -> bool [h2, w2] (C order), with the
    sampling of `resize_counts` and without rasterising at full resolution."""
    return decode_resized_many([counts], size, new_size)[0]


class RLEMasks:
    """The masks of one image kept as COCO RLE (strings or run lengths), rasterised on demand.

    `shape` is (N, h, w); `sample(rows, cols)` -> bool [N, len(rows), len(cols)] reads only the
    sampled pixels (rows non-decreasing; cols non-decreasing, or non-increasing for a flipped view).
    `pixelclip.data.augment.ViewAugment` takes it in place of a dense mask tensor."""

    def __init__(self, rles: list[str | bytes | np.ndarray], size: tuple[int, int]):
        self.rles, self.size = list(rles), (int(size[0]), int(size[1]))
        self.shape = (len(self.rles), *self.size)

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        cols = np.asarray(cols)
        flip = cols.size > 1 and cols[0] > cols[-1]
        out = sample_many(self.rles, self.size, rows, cols[::-1] if flip else cols)
        return np.ascontiguousarray(out[:, :, ::-1]) if flip else out
