"""``import normdrop`` is cheap: NumPy only, no backend dependencies, well under 0.2 s."""

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
    import normdrop
    elapsed = time.process_time() - start
    loaded = sorted(m for m in {heavy!r} if m in sys.modules)
    import normdrop.registry as registry
    normdrop.get_backend("numpy")
    print(json.dumps({{"elapsed": elapsed, "loaded": loaded,
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
    best = min(r["elapsed"] for r in runs)
    assert best < 0.2, f"import normdrop took {best:.3f} s of CPU time (best of 3)"


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
