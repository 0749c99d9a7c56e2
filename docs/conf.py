"""Sphinx configuration of the normdrop documentation.

Build (as CI does, warnings are errors)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Nothing here reaches the network: intersphinx is off.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

try:  # an installed (e.g. editable) normdrop is preferred
    import normdrop
except ImportError:  # building from a bare checkout
    sys.path.insert(0, os.path.abspath(".."))
    import normdrop

# -- Project -------------------------------------------------------------------
project = "normdrop"
author = "normdrop developers"
copyright = "normdrop developers"
release = normdrop.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------
extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
default_role = "py:obj"

# -- MyST (the .md pages) ------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist"]
myst_heading_anchors = 3

# -- API reference -------------------------------------------------------------
autosummary_generate = True  # writes docs/api/generated/ (git-ignored)
autosummary_imported_members = False
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
numpydoc_show_class_members = False  # members come from the class template instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"normdrop {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "auto"}
html_static_path = ["_static"]
html_css_files = ["normdrop.css"]
# Top-level pages have no sub-pages: without this the theme shows an empty "Section
# Navigation" sidebar on them. ("*" matches no "/": the guide and the API reference,
# whose pages have sections, keep the default sidebar.)
html_sidebars = {"*": []}
html_show_sourcelink = False


# -- Re-exported names ---------------------------------------------------------
# The reference documents each object once, in the module that defines its public
# home (``normdrop.layers.BatchNorm1d``, ``normdrop.registry.set_backend``, ...).
# Users and docstrings write the top-level re-exports (``normdrop.BatchNorm1d``,
# ``normdrop.manual_seed``); this hook points those references at the documented object.
_PUBLIC_HOMES = (
    "normdrop.layers",
    "normdrop.errors",
    "normdrop.registry",
    "normdrop.random",
    "normdrop.protocol",
    "normdrop.functional",
)


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    name = target.removeprefix("normdrop.")
    if "." in name or name not in normdrop.__all__:
        return None
    py = env.get_domain("py")
    for home in _PUBLIC_HOMES:
        full = f"{home}.{name}"
        if full in py.objects:
            return py.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
            )
    return None


def _escape_star_args(app, what, name, obj, options, lines):
    # Shapes written "(..., *normalized_shape)" in a docstring read as an unclosed
    # emphasis in reST; show the star literally.
    for i, line in enumerate(lines):
        lines[i] = line.replace("(..., *normalized_shape)", r"(..., \*normalized_shape)")


class CliHelp(SphinxDirective):
    """``normdrop-help``: the ``--help`` text of ``normdrop [COMMAND]``, from the real parser."""

    optional_arguments = 1

    def run(self):
        from normdrop.cli import main

        argv = [*self.arguments, "--help"]
        saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
        os.environ.update(COLUMNS="88", NO_COLOR="1")  # stable wrapping, no colour codes
        text = io.StringIO()
        try:
            with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
                main(argv)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        block = nodes.literal_block(text.getvalue(), text.getvalue())
        block["language"] = "text"
        return [block]


def _run_worked_example():
    """Run docs/examples/mlp_training.py as a user would: its printed output and its
    figure go to docs/_generated/ (git-ignored), which the worked-example page includes."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = os.path.join(here, "_generated")
    os.makedirs(out_dir, exist_ok=True)
    script = os.path.join(here, "examples", "mlp_training.py")
    done = subprocess.run(
        [sys.executable, script, os.path.join(out_dir, "mlp_training.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    with open(os.path.join(out_dir, "mlp_training.txt"), "w") as f:
        f.write(done.stdout)


_run_worked_example()


def setup(app):
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-docstring", _escape_star_args)
    app.add_directive("normdrop-help", CliHelp)
