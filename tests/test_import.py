"""``import normdrop`` is cheap: NumPy only, no backend dependencies, and less CPU time of its
own than twice NumPy's import on the same machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

HEAVY = ("numba", "cupy", "dask", "torch", "llvmlite", "scipy")

_PROBE = textwrap.dedent(
    """
    import json, sys, time
    start = time.process_time()  # CPU time: a busy machine slows the clock, not the import
    import numpy
    numpy_time = time.process_time() - start
    start = time.process_time()
    import normdrop
    elapsed = time.process_time() - start
    loaded = sorted(m for m in {heavy!r} if m in sys.modules)
    import normdrop.registry as registry
    normdrop.get_backend("numpy")
    print(json.dumps({{"elapsed": elapsed, "numpy": numpy_time, "loaded": loaded,
                      "plugins_scanned": registry._plugins is not None,
                      "after_numpy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
    """
).format(heavy=HEAVY)


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != "NORMDROP_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light_and_fast():
    runs = [_run(_PROBE) for _ in range(3)]
    for result in runs:
        assert result["loaded"] == [], f"import normdrop imported {result['loaded']}"
        # the built-in reference backend loads without scanning entry points or importing more
        assert result["plugins_scanned"] is False
        assert result["after_numpy"] == []
    # relative to NumPy's import in the same process: machines differ fivefold in import
    # speed (0.03 to 0.1 s of CPU for NumPy alone), a heavy import (SciPy, Numba) far more
    best = min(runs, key=lambda r: r["elapsed"] / r["numpy"])
    assert best["elapsed"] < 2 * best["numpy"], (
        f"import normdrop took {best['elapsed']:.3f} s of CPU time after NumPy's "
        f"{best['numpy']:.3f} s (best of 3)"
    )


def test_import_backends_subpackage():
    code = textwrap.dedent(
        """
        import json, sys
        import normdrop.backends
        import normdrop.backends.numpy_backend as nb
        print(json.dumps({"pkg": normdrop.backends.__name__, "name": nb.backend.name,
                          "numba": "numba" in sys.modules}))
        """
    )
    result = _run(code)
    assert result == {"pkg": "normdrop.backends", "name": "numpy", "numba": False}


def test_public_names():
    import normdrop

    for name in normdrop.__all__:
        assert hasattr(normdrop, name), name
    assert isinstance(normdrop.__version__, str)
