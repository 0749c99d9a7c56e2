"""Kernel implementations of normdrop, one module (or package) per backend.

Installed as :mod:`normdrop.backends`. Nothing here is imported by ``import normdrop``;
the registry imports a backend the first time it is used.
"""
