"""The dask backend on the threaded scheduler and on a real two-process LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

import normdrop
from normdrop import functional as F

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

CHUNKINGS = [(7, 4, 5), (40, 6, 9), (3, 1, 2), (13, 6, 9), (40, 1, 2)]


@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, on 127.0.0.1 only."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="2GiB",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((40, 6, 9)) * 3 + 1, rng.standard_normal((40, 6, 9))


def _np(a):
    return np.asarray(a.compute() if hasattr(a, "compute") else a)


def test_output_is_lazy_dask_and_chosen_by_type(data):
    x, _ = data
    y = F.batch_norm(da.from_array(x, chunks=(7, 4, 5)), training=True)
    assert type(y).__module__.startswith("dask")
    y = F.layer_norm(da.from_array(x, chunks=(7, 4, 9)), 9)
    assert type(y).__module__.startswith("dask")


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_batch_norm_train_equals_in_memory(data, chunks):
    x, g = data
    w, b = np.linspace(0.5, 2, 6), np.linspace(-1, 1, 6)
    rm, rv = np.zeros(6), np.ones(6)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = F.batch_norm_with_stats(
        da.from_array(x, chunks=chunks), rm, rv, w, b, training=True
    )
    y0, mean0, rstd0 = F.batch_norm_with_stats(x, rm0, rv0, w, b, training=True, backend="numpy")
    np.testing.assert_allclose(_np(y), y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rm, rm0, rtol=1e-13)
    np.testing.assert_allclose(rv, rv0, rtol=1e-13)
    grads = F.batch_norm_backward(
        da.from_array(g, chunks=chunks[::-1]), da.from_array(x, chunks=chunks), mean, rstd, w
    )
    grads0 = F.batch_norm_backward(g, x, mean0, rstd0, w, backend="numpy")
    for got, expected in zip(grads, grads0, strict=True):
        np.testing.assert_allclose(_np(got), expected, rtol=1e-10, atol=1e-12)


def test_batch_norm_eval_is_lazy_blockwise(data):
    x, _ = data
    rm, rv = np.linspace(-1, 1, 6), np.linspace(1, 3, 6)
    xd = da.from_array(x, chunks=(7, 4, 5))
    y = F.batch_norm(xd, rm, rv, training=False)
    assert y.chunks == xd.chunks  # blockwise: no rechunk, nothing computed
    np.testing.assert_allclose(_np(y), F.batch_norm(x, rm, rv, backend="numpy"), rtol=1e-12)


@pytest.mark.parametrize("chunks", [(2, 3, 3, 4), (5, 4, 3, 8), (1, 1, 1, 1)])
def test_layer_norm_equals_in_memory(chunks):
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((5, 4, 3, 8)), rng.standard_normal((5, 4, 3, 8))
    w, b = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    xd = da.from_array(x, chunks=chunks)
    y, mean, rstd = F.layer_norm_with_stats(xd, (3, 8), w, b)
    y0, mean0, rstd0 = F.layer_norm_with_stats(x, (3, 8), w, b, backend="numpy")
    np.testing.assert_allclose(_np(y), y0, rtol=1e-12, atol=1e-12)
    grads = F.layer_norm_backward(da.from_array(g, chunks=chunks), xd, (3, 8), mean, rstd, w)
    grads0 = F.layer_norm_backward(g, x, (3, 8), mean0, rstd0, w, backend="numpy")
    for got, expected in zip(grads, grads0, strict=True):
        np.testing.assert_allclose(_np(got), expected, rtol=1e-10, atol=1e-12)


def test_layer_norm_keeps_whole_rows_blockwise():
    x = da.ones((64, 32), chunks=(16, 32))
    assert F.layer_norm(x, 32).chunks == x.chunks


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_dropout_mask_independent_of_chunking(data, chunks):
    x, g = data
    expected = F.dropout(x, 0.3, seed=2**63 + 5, call=9, backend="numpy")
    got = F.dropout(da.from_array(x, chunks=chunks), 0.3, seed=2**63 + 5, call=9)
    assert np.array_equal(_np(got), expected)
    back = F.dropout_backward(da.from_array(g, chunks=chunks), 0.3, seed=2**63 + 5, call=9)
    assert np.array_equal(_np(back), F.dropout_backward(g, 0.3, seed=2**63 + 5, call=9))


def test_dropout_mask_function(data):
    expected = F.dropout_mask((40, 6, 9), 0.25, seed=1, call=2, backend="numpy")
    assert np.array_equal(
        _np(F.dropout_mask((40, 6, 9), 0.25, seed=1, call=2, backend="dask")), expected
    )


def test_asarray_of_empty_data_and_the_fused_op_on_it():
    """Dask's automatic chunking divides by zero on empty data (a zero batch, as Paddle's
    ZeroSize tests use): the backend's asarray gives it one chunk, and the ops run on it."""
    be = normdrop.get_backend("dask")
    x = be.asarray(np.empty((0, 4, 1024), np.float32))  # (0, 3, 4) happens to work
    assert isinstance(x, da.Array) and x.shape == (0, 4, 1024)
    y, r = F.dropout_add_layer_norm(x, x, 1024, p=0.5, seed=1)
    assert be.to_numpy(y).shape == (0, 4, 1024) and be.to_numpy(r).dtype == np.float32


def test_layers_on_dask(data):
    x, g = data
    bn, bn0 = normdrop.BatchNorm1d(6, dtype="float64"), normdrop.BatchNorm1d(6, dtype="float64")
    xd = da.from_array(x, chunks=(8, 3, 9))
    np.testing.assert_allclose(_np(bn(xd)), bn0(x), rtol=1e-12)
    assert isinstance(bn.running_mean, np.ndarray)  # parameters and buffers stay on the host
    np.testing.assert_allclose(bn.running_var, bn0.running_var, rtol=1e-13)
    np.testing.assert_allclose(
        _np(bn.backward(da.from_array(g, chunks=(8, 3, 9)))), bn0.backward(g)
    )
    np.testing.assert_allclose(_np(bn.grads["weight"]), bn0.grads["weight"], rtol=1e-10)
    drop, drop0 = normdrop.Dropout(0.4, seed=3), normdrop.Dropout(0.4, seed=3)
    assert np.array_equal(_np(drop(xd)), drop0(x))
    assert np.array_equal(_np(drop.backward(da.from_array(g))), drop0.backward(g))


def test_on_distributed_worker_processes(client, data):
    x, _ = data
    xd = da.from_array(x, chunks=(7, 4, 5))
    rm, rv = np.zeros(6), np.ones(6)
    with normdrop.use_backend("dask"):  # context is resolved here, not on the workers
        y = F.batch_norm(xd, rm, rv, training=True)
        z = F.dropout(F.layer_norm(y, 9), 0.2, seed=4)
    rm0, rv0 = np.zeros(6), np.ones(6)
    y0 = F.batch_norm(x, rm0, rv0, training=True, backend="numpy")
    z0 = F.dropout(F.layer_norm(y0, 9, backend="numpy"), 0.2, seed=4, backend="numpy")
    np.testing.assert_allclose(client.compute(z).result(), z0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rv, rv0, rtol=1e-13)


def test_statistics_of_an_array_larger_than_a_worker(client):
    """4 GiB of float64 on two workers limited to 2 GiB each: reduced without gathering."""
    shape, chunks = (2**20, 8, 64), (2**14, 8, 64)  # 2**29 values, 64 MiB chunks
    x = da.random.default_rng(0).random(shape, chunks=chunks)
    assert x.nbytes == 4 * 2**30
    mean, var = normdrop.get_backend("dask").channel_moments(x)
    assert mean.shape == var.shape == (8,)
    np.testing.assert_allclose(mean, 0.5, atol=1e-3)
    np.testing.assert_allclose(var, 1 / 12, atol=1e-3)
    assert len(client.scheduler_info()["workers"]) == 2  # no worker was killed for memory


def test_cluster_before_any_kernel_ran_in_the_client():
    """Graphs carry the block backend by name, so a fresh client process whose numba
    backend has run no kernel yet can ship a BatchNorm graph to worker processes."""
    import subprocess
    import sys

    code = (
        "import numpy as np, dask.array as da, normdrop\n"
        "from distributed import Client, LocalCluster\n"
        "if __name__ == '__main__':\n"
        "    with LocalCluster(n_workers=1, threads_per_worker=1, host='127.0.0.1',\n"
        "                      dashboard_address=None) as cluster, Client(cluster):\n"
        "        x = np.arange(120.0).reshape(8, 3, 5)\n"
        "        y = normdrop.BatchNorm1d(3)(da.from_array(x, chunks=(4, 3, 5))).compute()\n"
        "        print(abs(y - normdrop.BatchNorm1d(3)(x)).max() < 1e-12)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize(("blocks", "share"), [(1, 1.0), (64, 0.0)])
def test_block_kernels_share_numba_threads(blocks, share):
    """A block gets ``threads // blocks`` (at least 1) of Numba's threads; restored after."""
    numba = pytest.importorskip("numba")
    from normdrop.backends.dask_backend._blocks import Kernels, block_threads

    before = numba.get_num_threads()
    with block_threads(Kernels("numba"), blocks):
        inside = numba.get_num_threads()
    assert inside == max(1, int(before * share))
    assert numba.get_num_threads() == before
