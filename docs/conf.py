"""Sphinx configuration: ``python -m sphinx -W docs docs/_build/html`` (offline, < 3 minutes).

Staging: at the start of every build the notebooks are copied to ``docs/notebooks/`` and
benchmarks/RESULTS.md (with its images, and ``benchmarks/results/*.md``) to
``docs/benchmarks/`` (both git-ignored), mirroring the repository's layout so that the README's
relative links resolve in the README sections the pages include (``{include} ../README.md``,
cut at its headings). The notebooks are rendered from their committed outputs, never executed;
the Lookahead figure is that of notebooks/trajectories.ipynb, taken from its committed output
into ``docs/_generated/``.

Strictness: ``-W`` turns every warning into an error, ``nitpicky`` makes every unresolved
lookax cross-reference one (other libraries' names cannot resolve offline and are ignored),
and ``_check_public_api`` fails the build when a name in ``lookax.__all__`` is not documented
(or has no docstring).
"""

from __future__ import annotations

import base64
import filecmp
import inspect
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

# Document the checkout next to this file, not whatever lookax is installed.
sys.path.insert(0, str(ROOT))

import lookax  # noqa: E402

project = "lookax"
author = "the lookax authors"
copyright = "the lookax authors"  # noqa: A001
version = release = lookax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax (3.2.2) shipped with the site, copied into _build/html/_static/mathjax/: the
    # pages render their math offline, with no script from a CDN ([docs] extra).
    "sphinx-mathjax-offline",
    "myst_nb",  # Markdown pages (MyST) and the notebooks, with their committed outputs
]
# What sphinx-mathjax-offline sets too, said here: the bundled MathJax, under _static/.
mathjax_path = "mathjax/tex-chtml.js"

# --------------------------------------------------------------------------
# Strictness.
# --------------------------------------------------------------------------

nitpicky = True
# Without network there is no intersphinx, so names from other libraries cannot
# resolve; lookax's own names must (they are not in these patterns).
nitpick_ignore_regex = [
    (r"py:.*", r"(optax|jax|jaxlib|numpy|np|chex|flax|ml_dtypes)(\..*)?"),
    (r"py:.*", r"(Array|ArrayTree|ArrayLike|Params|Updates|OptState|Schedule|Hashable)"),
    (r"py:.*", r"(collections\.abc|typing)\..*"),
    (r"py:.*", r"(Any|Callable|Literal|NamedTuple|None|Ellipsis)"),
    (r"py:class", r"(int|float|bool|str|tuple|list|dict|frozenset|type|object)"),
    # lookax.mnist1d re-exports from the private lookax._mnist1d, whose other names (e.g.
    # TrainCarry, in make_segment's signature) are not documented.
    (r"py:class", r"lookax\._mnist1d\..*"),
]

# --------------------------------------------------------------------------
# Sources.
# --------------------------------------------------------------------------

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "jupyter_execute", "Thumbs.db", ".DS_Store"]
# benchmarks/RESULTS.md pastes whole benchmark reports, whose headings skip levels.
suppress_warnings = ["myst.header"]

# Notebooks: rendered from the outputs committed with them, never executed.
nb_execution_mode = "off"
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 4  # links into RESULTS.md's sections, e.g. RESULTS.md#headline-ratios

# --------------------------------------------------------------------------
# API reference (autodoc + napoleon, Google-style docstrings).
# --------------------------------------------------------------------------

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
add_function_parentheses = False
autodoc_type_aliases = {
    "InnerStateOnSync": "lookax.InnerStateOnSync",
    # The names lookax's annotations use, shown as written (autodoc evaluates the
    # annotations, and would print optax's Params as the whole ArrayTree Union); the local
    # aliases are spelled out by _spell_out_aliases below.
    **{
        name: name
        for name in (
            "jax.Array",
            "optax.GradientTransformation",
            "optax.GradientTransformationExtraArgs",
            "optax.OptState",
            "optax.Params",
            "optax.Schedule",
            "optax.Updates",
            "ScalarOrSchedule",
            "Mask",
            "LeafKey",
        )
    },
}

# --------------------------------------------------------------------------
# HTML.
# --------------------------------------------------------------------------

html_theme = "furo"
html_title = f"lookax {release}"
html_static_path: list[str] = []


# --------------------------------------------------------------------------
# Staging (see the module docstring): notebooks/, benchmarks/ and _generated/ under docs/.
# --------------------------------------------------------------------------


def _copy_if_changed(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or not filecmp.cmp(source, target, shallow=False):
        shutil.copyfile(source, target)


def _write_if_changed(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_bytes() != data:
        target.write_bytes(data)


def _lookahead_figure() -> bytes:
    """The PNG under "## Lookahead's picture" in notebooks/trajectories.ipynb (committed)."""
    notebook = json.loads((ROOT / "notebooks" / "trajectories.ipynb").read_text())
    after_heading = False
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            after_heading = after_heading or source.startswith("## Lookahead's picture")
            continue
        if after_heading:
            for output in cell.get("outputs", []):
                png = output.get("data", {}).get("image/png")
                if png:
                    return base64.b64decode("".join(png))
    raise RuntimeError(
        "notebooks/trajectories.ipynb has no image output under '## Lookahead's picture': "
        "docs/lookahead.md shows that figure (run the notebook and commit its outputs)"
    )


def _mirror(source: Path, target: Path, patterns: tuple[str, ...], orphan: bool = False) -> None:
    """Copies ``source``'s files matching ``patterns`` to ``target``, dropping stale ones.

    ``orphan``: Markdown files get ``orphan: true`` front matter (pages reached by links
    only, not listed in a toctree).
    """
    wanted = {path.name: path for pattern in patterns for path in source.glob(pattern)}
    if target.exists():
        for stale in target.iterdir():
            if stale.is_file() and stale.name not in wanted:
                stale.unlink()
    for name, path in sorted(wanted.items()):
        if orphan and path.suffix == ".md":
            text = path.read_text()
            _write_if_changed(target / name, ("---\norphan: true\n---\n\n" + text).encode())
        else:
            _copy_if_changed(path, target / name)


def _stage() -> None:
    _mirror(ROOT / "notebooks", DOCS / "notebooks", ("*.ipynb",))
    _mirror(ROOT / "benchmarks", DOCS / "benchmarks", ("RESULTS.md", "*.png"))
    _mirror(
        ROOT / "benchmarks" / "results",
        DOCS / "benchmarks" / "results",
        ("*.md", "*.png", "*.txt"),
        orphan=True,
    )
    _write_if_changed(GENERATED / "lookahead_picture.png", _lookahead_figure())


_stage()


# --------------------------------------------------------------------------
# Every public name documented.
# --------------------------------------------------------------------------


def _check_public_api(app: Any, env: Any) -> None:
    from sphinx.util import logging

    logger = logging.getLogger("lookax.docs")
    documented = env.get_domain("py").objects
    for name in lookax.__all__:
        if f"lookax.{name}" not in documented:
            logger.warning(
                "lookax.%s is in lookax.__all__ but not documented: add it to docs/api.md",
                name,
                location="api",
            )
            continue
        obj = getattr(lookax, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not obj.__doc__:
            logger.warning("lookax.%s has no docstring", name, location="api")


# Type aliases that lookax's signatures use, spelled out (autodoc_type_aliases above keeps
# their bare names, which autodoc would otherwise print expanded).
_SIGNATURE_ALIASES = {
    "ScalarOrSchedule": "float | jax.Array | optax.Schedule",
    "Mask": "Any | Callable[[optax.Params], Any] | None",
    "LeafKey": "Callable[[Any], Hashable | None]",
}
_ALIAS_PATTERN = re.compile(r"\b(" + "|".join(_SIGNATURE_ALIASES) + r")\b")
# Where autodoc can evaluate a signature it expands optax.Schedule, a Callable over jax's
# ArrayLike; put the name back.
_ARRAY_LIKE = r" \| ".join(
    [r"~?[\w.]*Array", r"~?[\w.]*ndarray", r"~?[\w.]*bool", r"~?[\w.]*number"]
    + ["bool", "int", "float", "complex"]
)
_SCHEDULE_PATTERN = re.compile(rf"~?[\w.]*Callable\[\[{_ARRAY_LIKE}\], {_ARRAY_LIKE}\]")
# An autodoc_type_aliases name inside a Union (``optax.OptState | None``) prints as
# ``TypeAliasForwardRef('optax.OptState')``: back to the bare name.
_FORWARD_REF_PATTERN = re.compile(r"~?[\w.]*TypeAliasForwardRef\('([^']*)'\)")


def _spell_out_aliases(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    def spell(text: str | None) -> str | None:
        if text is None:
            return None
        text = _FORWARD_REF_PATTERN.sub(r"\1", text)
        text = _SCHEDULE_PATTERN.sub("optax.Schedule", text)
        return _ALIAS_PATTERN.sub(lambda match: _SIGNATURE_ALIASES[match.group(1)], text)

    return spell(signature), spell(return_annotation)


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-signature", _spell_out_aliases)
    app.connect("env-check-consistency", _check_public_api)
    return {"parallel_read_safe": True}
