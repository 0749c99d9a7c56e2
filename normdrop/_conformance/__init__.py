"""The parts of :func:`normdrop.testing.check_backend`, one job a module.

* :mod:`.compare`: failure messages and comparisons with the reference backend;
* :mod:`.members`: the protocol's members and their signatures;
* :mod:`.kernels`: the required kernels, Philox and dropout;
* :mod:`.optional`: the optional capabilities and keywords a backend declares.
"""
