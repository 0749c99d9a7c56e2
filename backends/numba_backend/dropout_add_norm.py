"""Fused dropout + residual add + LayerNorm on C-contiguous ``(R, D)`` rows, one pass per row.

Each task owns whole rows (about :data:`~.jit.TASK_SIZE` values, a multiple of eight
values in all so that its bitmask bytes are its own). Per row: the row's keep bits,
128 at a time straight from the Philox rounds (:func:`.philox.keep_bits128`, as the
dropout kernel makes them), stored as the row's bitmask bytes and as one 0/1 byte per
element (:func:`.bitmask.unpack64`), then one loop that drops, scales, adds the
residual, stores ``r`` and takes its sum and sum of squares (shifted, see
:func:`_row_stats`); the output pass reads ``r`` back from the L1 cache. With dropout,
the next row's lines are prefetched a few at a time while a row's bits are made, so
that memory and arithmetic overlap.
Memory sees one read of ``x`` and ``residual`` and one write of ``r``, ``y`` and the
bitmask.

With ``stream`` (large outputs, :data:`.stream.STREAM_MIN_BYTES`) a row's ``r`` and
``y`` are made in buffers in the L1 cache and then stored a line at a time with
non-temporal stores (:func:`.stream.stream_row`): without them each output line is
first read from memory for ownership, so the outputs' bytes cross the memory bus
twice. The values, and the order in which the sums take them, are those of the
ordinary path.

``r`` is rounded to the data dtype twice, as the separate calls round it (the
dropout output, then the sum): these kernels are compiled without ``contract``, so
that ``x * scale + residual`` never becomes one fused multiply-add. The statistics
are those of the stored ``r``, in float64.

One kernel source, :func:`dropout_add_layer_norm_rows`, is compiled as a serial and a
parallel clone (:func:`.jit.kernel`); the tasks, and so the results, are the same.
It is only called from Python: a cached serial function must not call a parallel one.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .bitmask import WIDTH, pack_at_least, put64, unpack64
from .dropout import Key
from .jit import TASK_SIZE, jit, kernel
from .philox import CHUNK, keep_bits128
from .prefetch import LINE, prefetch_read, prefetch_write
from .stream import store_fence, stream_row

__all__ = ["dropout_add_layer_norm_rows", "rows_per_task"]

#: The library's fast-math flags minus ``contract`` (see the module docstring).
_FASTMATH = frozenset({"reassoc", "arcp", "afn"})
#: Bytes between a row buffer and any other array (see :func:`_apart`): more than the
#: widest vector iteration (eight 64-byte vectors).
APART = 1024
#: What the kernel calls is inlined into it (see :mod:`.jit`), except the task function.
_helper = jit(fastmath=_FASTMATH, inline="always")
_task_jit = jit(fastmath=_FASTMATH)


@_helper
def _prefetch_lines(x, residual, r, out, ri, l0, l1, stream):
    """Start loading cache lines ``l0 .. l1 - 1`` of row ``ri`` of the inputs, and claiming
    them in the outputs unless these are streamed."""
    step = max(1, LINE // x.itemsize)
    for line in range(l0, l1):
        j = line * step
        prefetch_read(x[ri], j)
        if residual is not None:
            prefetch_read(residual[ri], j)
        if not stream:
            prefetch_write(r[ri], j)
            prefetch_write(out[ri], j)


@_helper
def rows_per_task(rows: int, d: int) -> tuple[int, int]:
    """Rows per task (about TASK_SIZE values, ``per * d`` a multiple of 8) and task count."""
    unit = 8
    while unit > 1 and (unit // 2) * d % 8 == 0:
        unit //= 2
    per = max(1, TASK_SIZE // max(d, 1))
    per = ((per + unit - 1) // unit) * unit
    return per, (rows + per - 1) // per


@_helper
def _row_keep(
    keep, aligned, bits, byte0, n, block, lane, key, thr, x, residual, r, out, ahead, stream
):  # fmt: skip
    """0/1 keep bytes ``keep[:n]`` of ``n`` elements from word ``lane`` of counter block
    ``block`` on; with ``byte0 >= 0`` (then ``lane == 0`` and ``n % 8 == 0``) also their
    bitmask bytes ``bits[byte0 : byte0 + n // 8]``.

    The bits are made a chunk of 128 at a time from ``block`` on into ``aligned`` (one
    ``uint64`` per 64 elements), then shifted down by ``lane`` when the row starts
    inside a block. Around each chunk a share of row ``ahead``'s cache lines is
    prefetched in two rounds, before and after its Philox rounds (none when ``ahead <
    0``), so that the next row's memory traffic flows while this row's bits are made,
    instead of the two taking turns (docs/benchmarks.md, "Kernel tuning").
    """
    chunks = (lane + n + CHUNK - 1) // CHUNK
    lines = (n * x.itemsize + LINE - 1) // LINE
    for k in range(chunks):
        l0 = k * lines // chunks
        l1 = (k + 1) * lines // chunks
        lm = (l0 + l1) // 2
        if ahead >= 0:
            _prefetch_lines(x, residual, r, out, ahead, l0, lm, stream)
        low, high = keep_bits128(block + np.uint64(k * (CHUNK // 4)), key, thr)
        if ahead >= 0:
            _prefetch_lines(x, residual, r, out, ahead, lm, l1, stream)
        aligned[2 * k] = low
        aligned[2 * k + 1] = high
    shift = np.uint64(lane)
    for k in range((n + WIDTH - 1) // WIDTH):
        current = aligned[k]
        if lane > 0:
            current = (current >> shift) | (aligned[k + 1] << (np.uint64(WIDTH) - shift))
        unpack64(current, keep, k * WIDTH)
        if byte0 >= 0:
            if (k + 1) * WIDTH <= n:
                put64(bits, byte0 + k * (WIDTH // 8), current)
            else:
                for q in range((n - k * WIDTH) // 8):
                    byte = (current >> np.uint64(8 * q)) & np.uint64(0xFF)
                    bits[byte0 + k * (WIDTH // 8) + q] = np.uint8(byte)


@_helper
def _sum_row(xr, resr, rr, keep, drop, scale, shift):
    """``rr = dropout(xr) + resr``; return ``sum(rr - shift)`` and ``sum((rr - shift) ** 2)``
    in float64.

    Every ``xr[j]`` is loaded and scaled before the keep byte selects it: with the load
    inside the condition, LLVM made it a masked load (``vmaskmovps`` on AVX2, with a
    second mask built for it), and the loop ran 1.08-1.15x slower.
    """
    zero = xr.dtype.type(0)
    s = 0.0
    q = 0.0
    if resr is None:
        if drop:
            for j in range(xr.size):
                v = xr[j] * scale
                v = v if keep[j] else zero
                rr[j] = v
                e = v - shift
                s += e
                q += e * e
        else:
            for j in range(xr.size):
                v = xr[j]
                rr[j] = v
                e = v - shift
                s += e
                q += e * e
    elif drop:
        for j in range(xr.size):
            h = xr[j] * scale
            h = h if keep[j] else zero
            v = h + resr[j]
            rr[j] = v
            e = v - shift
            s += e
            q += e * e
    else:
        for j in range(xr.size):
            v = xr[j] + resr[j]
            rr[j] = v
            e = v - shift
            s += e
            q += e * e
    return s, q


@_helper
def _row_stats(xr, resr, rr, keep, drop, scale, eps):
    """Write ``rr = dropout(xr) + resr`` and return its float64 mean and ``1 / sqrt(var +
    eps)``.

    For values of at most 32 bits the sums are taken in the one pass, shifted by a
    value of the row (``resr[0]``, or ``xr[0]``): the differences of such values are
    exact in float64 but for extreme exponent gaps, and ``q / d - c * c`` loses about
    1e-16 times the squared distance of the shift from the mean in standard deviations,
    so the variance keeps float32 accuracy unless the shift lies tens of thousands of
    deviations away. Float64 rows, which need more, keep a second pass over ``rr`` (in
    the L1 cache) for the centred squares.
    """
    d = xr.size
    if xr.itemsize <= 4:
        shift = np.float64(resr[0] if resr is not None else xr[0])
        s, q = _sum_row(xr, resr, rr, keep, drop, scale, shift)
        c = s / d
        m = shift + c
        var = max(q / d - c * c, 0.0)
    else:
        s, _ = _sum_row(xr, resr, rr, keep, drop, scale, 0.0)
        m = s / d
        q = 0.0
        for j in range(d):
            e = rr[j] - m
            q += e * e
        var = q / d
    return m, 1.0 / np.sqrt(var + eps)


@_helper
def _float64(d, v, fill):
    """``v`` (any float dtype) as float64, or ``fill`` repeated when it is None."""
    if v is None:
        return np.full(d, fill)
    return v.astype(np.float64)


@_helper
def _apart(n, like):
    """An empty array of ``n`` values of ``like``'s dtype, at least :data:`APART` bytes
    from any other array.

    A loop that stores into one array and reads another is vectorised behind a runtime
    check that the store does not land just ahead of the reads (within the bytes of one
    vector iteration), and runs one value at a time otherwise: a sum it takes then
    comes out in another order, other bits. A row's buffer in the middle of a larger
    allocation is never that close to an input's row, so its sums take the order they
    take in the output row itself.
    """
    pad = APART // like.itemsize
    return np.empty(n + 2 * pad, like.dtype)[pad : pad + n]


@_helper
def _normalise(rr, yr, m, rs, w, b):
    """``yr = (rr - m) * rs * w + b`` in float64, rounded once to ``yr``'s dtype."""
    for j in range(rr.size):
        yr[j] = (rr[j] - m) * rs * w[j] + b[j]


@_task_jit
def _task(
    x, residual, weight, bias, eps, drop, thr, scale, key,
    out, r, bits, pack, mean, rstd, block0, lane0, t, per, stream,
):  # fmt: skip
    """Rows ``t * per .. (t + 1) * per - 1``: dropout, add, statistics, output."""
    rows, d = x.shape
    r0 = t * per
    r1 = min(rows, r0 + per)
    # float64 parameters once per task: converting them per element costs the output pass
    w64 = _float64(d, weight, 1.0)
    b64 = _float64(d, bias, 0.0)
    # a row's keep bytes in whole 64s, and its bits in whole chunks from its first block
    keep = np.empty((d + WIDTH - 1) // WIDTH * WIDTH, np.uint8)
    aligned = np.zeros((d + 3 + CHUNK - 1) // CHUNK * (CHUNK // WIDTH), np.uint64)
    # with whole bitmask bytes per row each row's bits are stored as they are made;
    # otherwise the task's keep bytes are gathered and packed at its end
    row_bits = pack and drop and d % 8 == 0
    gather = pack and drop and not row_bits
    gathered = np.zeros(((r1 - r0) * d + 7) // 8 * 8 if gather else 0, np.uint8)
    # streamed rows are made in the L1 cache and then stored a line at a time
    rbuf = _apart(d if stream else 0, r)
    ybuf = np.empty(d if stream else 0, out.dtype)
    for ri in range(r0, r1):
        if drop:
            position = lane0 + ri * d
            # the next row, also the first of the next task (that this thread
            # usually runs), but never past the array
            ahead = ri + 1 if ri + 1 < rows else -1
            _row_keep(keep, aligned, bits, ri * d // 8 if row_bits else -1, d,
                      block0 + np.uint64(position // 4), position % 4, key, thr,
                      x, residual, r, out, ahead, stream)  # fmt: skip
            if gather:
                kr = gathered[(ri - r0) * d :]
                for j in range(d):
                    kr[j] = keep[j]
        rr = rbuf if stream else r[ri]
        yr = ybuf if stream else out[ri]
        if residual is None:
            m, rs = _row_stats(x[ri], None, rr, keep, drop, scale, eps)
        else:
            m, rs = _row_stats(x[ri], residual[ri], rr, keep, drop, scale, eps)
        _normalise(rr, yr, m, rs, w64, b64)
        if stream:
            stream_row(r[ri], rbuf)
            stream_row(out[ri], ybuf)
        mean[ri] = m
        rstd[ri] = rs
    if gather:
        base = r0 * d // 8
        pack_at_least(gathered, gathered.size, np.uint8(1), bits[base : base + gathered.size // 8])
    if stream:
        store_fence()


@kernel(fastmath=_FASTMATH)
def dropout_add_layer_norm_rows(
    x: np.ndarray,
    residual: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
    drop: bool,
    thr: np.uint64,
    scale: np.floating,
    key: Key,
    out: np.ndarray,
    r: np.ndarray,
    bits: np.ndarray,
    pack: bool,
    stats: np.ndarray,
    block0: np.uint64,
    lane0: int,
    stream: bool,
) -> None:
    """``r = dropout(x) + residual``, ``out = layer_norm(r)`` for ``(R, D)`` rows.

    Dropout only when ``drop`` (keep where the Philox word is ``>= thr``, kept values
    times ``scale``, a scalar of the data dtype); ``key`` holds the 32-bit words
    ``(c2, c3, k0, k1)`` of ``call`` and ``seed``; element ``(0, 0)`` is word ``lane0``
    of counter block ``block0`` (a uint64). ``residual``, ``weight`` and ``bias``
    may be None; ``weight``/``bias`` of any float dtype. With ``pack`` (only when
    the first element is global element 0) the keep-mask is packed into ``bits``.
    Float64 mean and rstd go into ``stats`` of shape ``(2, R)``. With ``stream`` the
    rows of ``out`` and ``r`` are stored with non-temporal stores (same values).
    """
    rows, d = x.shape
    mean = stats[0]
    rstd = stats[1]
    per, n_tasks = rows_per_task(rows, d)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        _task(x, residual, weight, bias, eps, drop, thr, scale, key,
              out, r, bits, pack, mean, rstd, block0, lane0, t, per, stream)  # fmt: skip
