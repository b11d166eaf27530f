"""Nearest resizing and sampling of COCO RLE masks in run space, never rasterising at full size.

Target pixel (i, j) of an [h2, w2] mask reads source pixel (floor((i + 0.5) h / h2),
floor((j + 0.5) w / w2)) of the [h, w] source, computed exactly in integers. Each 1-run of the
column-major source is cut at the sampled columns it crosses and mapped to target rows with a lookup
table, so the cost is O(#runs + h + w + h2 + w2); dense outputs are written per mask by bounding-box
comparisons or pixel scatter, whichever a small cost model says is cheaper. The string codec is in
`pixelclip.data.rle`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .rle import as_counts, check_counts, joined_counts, segment_index

# decode_resized_many writes each mask either pixel by pixel or by comparisons over its bounding box,
# once per "layer" (k-th piece of each column), whichever this cost model (ns, measured on a 2-core
# x86 VM) says is cheaper: box = fixed + per layer (call + per box pixel), scatter = per set pixel.
_BOX_NS, _BOX_LAYER_NS, _BOX_PIXEL_NS, _SCATTER_PIXEL_NS = 6000.0, 1500.0, 0.3, 3.0


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
    odd = (segment_index(nvals) & 1).astype(bool)  # odd run index inside its mask = run of 1s
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
    j = np.repeat(ja, reps) + segment_index(reps)  # [P] target column of each piece
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
    c = as_counts(counts)
    nvals = np.array([c.size])
    check_counts(c, nvals, h, w)
    _, j, ia, ib = _pieces(*_one_runs(c, nvals, h * w), h, _sampling(h, h2), _sampling(w, w2))
    # A piece covers flat target indices j * h2 + [ia, ib).
    return _runs_from_intervals(j * h2 + ia, j * h2 + ib, h2 * w2)


def _scatter(out: np.ndarray, mask_id, j, ia, ib) -> None:
    """Set the pixels of column pieces [P] in out [n, h2, w2] one by one (cost ~ number of pixels)."""
    _, h2, w2 = out.shape
    length = ib - ia
    top = mask_id * (h2 * w2) + ia * w2 + j  # flat index of each piece's first pixel
    # Pixel t of a piece lies t rows (t * w2 flat) below its first pixel.
    out.reshape(-1)[np.repeat(top, length) + segment_index(length) * w2] = True


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
    layer = segment_index(np.diff(col_start, append=col.size))  # rank of each piece inside its column
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
    counts, nvals = joined_counts(rles)
    check_counts(counts, nvals, h, w)
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


def _decode_sampled(rles, size, row_sampling, col_sampling) -> np.ndarray:
    h, w = size
    h2, w2 = row_sampling[0].size, col_sampling[0].size
    if not rles:
        return np.zeros((0, h2, w2), dtype=bool)
    counts, nvals = joined_counts(rles)
    check_counts(counts, nvals, h, w)
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
