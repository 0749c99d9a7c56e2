"""Fork, spawn and threads: normdrop's numba kernels work after ``fork``, from several
threads under every threading layer installable here, and forked children draw
their own dropout seeds.

Each scenario runs in a fresh interpreter (the threading layer is chosen once per
process) with a timeout, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

TIMEOUT = 240

# Big enough (131072 elements) for the backend to take its parallel kernels.
_COMMON = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import normdrop
    from normdrop import functional as F

    SHAPE = (64, 32, 64)

    def data(i):
        return np.random.default_rng(i).standard_normal(SHAPE).astype(np.float32)

    def batch_norm_error(i):
        x = data(i)
        y = normdrop.BatchNorm1d(32)(x)
        ref = F.batch_norm(x.astype(np.float64), training=True, backend="numpy")
        return float(np.max(np.abs(y - ref)))

    def layer_norm_error(i):
        x = data(i)
        y = normdrop.LayerNorm(64)(x)
        ref = F.layer_norm(x.astype(np.float64), 64, backend="numpy")
        return float(np.max(np.abs(y - ref)))

    def dropout_error(i):
        x = data(i)
        y = normdrop.Dropout(0.3, seed=i)(x)
        ref = F.dropout(x, 0.3, seed=i, backend="numpy")
        return float(np.max(np.abs(y - ref)))

    def all_errors(i):
        return max(batch_norm_error(i), layer_norm_error(i), dropout_error(i))
    """
)


def _run(body: str, layer: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_THREADING_LAYER",))}
    env.pop("NORMDROP_BACKEND", None)
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    code = _COMMON + textwrap.dedent(body)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {TIMEOUT} s (a hang); stderr: {exc.stderr!r}")
    assert done.returncode == 0, f"exit {done.returncode}; stderr:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _installable_layers() -> list[str]:
    """The threading layers that load in a fresh interpreter here (after normdrop's setup)."""
    code = textwrap.dedent(
        """
        import json
        import normdrop
        normdrop.get_backend("numba")
        from numba.np.ufunc import parallel
        layers = []
        try:
            parallel._check_tbb_version_compatible()
            from numba.np.ufunc import tbbpool
            layers.append("tbb")
        except ImportError:
            pass
        try:
            from numba.np.ufunc import omppool
            layers.append("omp")
        except ImportError:
            pass
        layers.append("workqueue")
        print(json.dumps(layers))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


LAYERS = _installable_layers()

_FORK_POOL = """
    import multiprocessing, numba
    parent_error = all_errors(0)          # the parent starts Numba's threads first
    layer = numba.threading_layer()
    with multiprocessing.get_context("{method}").Pool(2) as pool:
        errors = pool.map(all_errors, range(1, 5))
    print(json.dumps({{"layer": layer, "parent": parent_error, "children": errors}}))
"""


def test_default_layer_is_fork_and_thread_safe():
    """Left to normdrop, the layer is tbb when it loads, else workqueue (never GNU OpenMP)."""
    result = _run("import numba; all_errors(0); print(json.dumps(numba.threading_layer()))")
    assert result == ("tbb" if "tbb" in LAYERS else "workqueue")


def test_without_tbb_the_default_is_workqueue():
    body = """
        import sys
        sys.modules["numba.np.ufunc.tbbpool"] = None   # as if tbb were not installed
        import numba
        all_errors(0)
        print(json.dumps(numba.threading_layer()))
    """
    assert _run(body) == "workqueue"


def test_explicit_choice_is_kept():
    """A layer the user named in the environment is never replaced."""
    for layer in LAYERS:
        body = "import numba; all_errors(0); print(json.dumps(numba.threading_layer()))"
        assert _run(body, layer=layer) == layer


def test_explicit_config_choice_is_kept():
    body = """
        import numba
        numba.config.THREADING_LAYER = "workqueue"
        all_errors(0)
        print(json.dumps(numba.threading_layer()))
    """
    assert _run(body) == "workqueue"


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_fork_pool_after_parallel_kernel_in_parent():
    result = _run(_FORK_POOL.format(method="fork"))
    assert result["layer"] in {"tbb", "workqueue"}
    assert result["parent"] < 1e-5
    assert len(result["children"]) == 4
    assert max(result["children"]) < 1e-5


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
@pytest.mark.skipif("workqueue" not in LAYERS, reason="workqueue layer not available")
def test_fork_pool_under_workqueue():
    result = _run(_FORK_POOL.format(method="fork"), layer="workqueue")
    assert result["layer"] == "workqueue"
    assert max(result["children"]) < 1e-5


def test_spawn_pool_after_parallel_kernel_in_parent():
    # spawn children import the -c script as __main__ only when it is a file; map a
    # function from an importable module instead.
    body = """
    import multiprocessing
    all_errors(0)
    from normdrop import functional
    x = data(1)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outs = pool.starmap(functional.layer_norm, [(x, 64)] * 2)
    ref = functional.layer_norm(x.astype(np.float64), 64, backend="numpy")
    print(json.dumps([float(np.max(np.abs(o - ref))) for o in outs]))
    """
    errors = _run(body)
    assert len(errors) == 2 and max(errors) < 1e-5


@pytest.mark.parametrize("layer", LAYERS)
def test_four_threads_on_separate_layers(layer):
    """4 threads, each with its own layers, under every installable threading layer."""
    body = """
    import threading, numba
    results = {}

    def work(i):
        results[i] = max(all_errors(10 * i + k) for k in range(3))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"layer": numba.threading_layer(), "errors": list(results.values())}))
    """
    result = _run(body, layer=layer)
    assert result["layer"] == layer
    assert len(result["errors"]) == 4
    assert max(result["errors"]) < 1e-5


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_forked_children_draw_distinct_dropout_seeds():
    body = """
    import multiprocessing

    def seed_and_mask(i):
        d = normdrop.Dropout(0.5)
        return d.seed, np.flatnonzero(d(np.ones(64, np.float32))).tolist()

    normdrop.manual_seed(0)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        drawn = pool.map(seed_and_mask, range(8), chunksize=1)
    parent = normdrop.Dropout(0.5).seed
    normdrop.manual_seed(0)
    unforked = normdrop.Dropout(0.5).seed
    print(json.dumps({"seeds": [s for s, _ in drawn], "masks": [m for _, m in drawn],
                      "parent": parent, "unforked": unforked}))
    """
    result = _run(body)
    seeds = result["seeds"]
    assert len(set(seeds)) == 8
    assert len({tuple(m) for m in result["masks"]}) == 8
    assert result["parent"] not in seeds
    # forking does not change the parent's own stream
    assert result["parent"] == result["unforked"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_fork_reseed_is_repeatable_after_manual_seed():
    body = """
    import os

    def child_seed():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, str(normdrop.Dropout(0.5).seed).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        return int(os.read(r, 100))

    normdrop.manual_seed(7)
    first = [child_seed(), child_seed()]
    normdrop.manual_seed(7)
    second = [child_seed(), child_seed()]
    print(json.dumps({"first": first, "second": second}))
    """
    result = _run(body)
    assert result["first"] == result["second"]
    assert result["first"][0] != result["first"][1]
