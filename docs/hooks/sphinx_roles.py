"""A Griffe extension for the API reference: the docstrings' Sphinx roles (:func:`name`, :class:`~a.b.C`,
:mod:`a.b`, ...) become cross-references. A name is resolved in the scope of the object whose docstring holds
it; a reference the site does not document renders as code, without a link (an *optional* autoref)."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|const):`(~?)([\w.]+)`")


def _target(obj: griffe.Object, name: str) -> str:
    if name.startswith("vbayes."):
        return name
    try:
        return obj.resolve(name)
    except Exception:  # noqa: BLE001 - an unresolvable name stays plain code
        return name


def _convert(text: str, obj: griffe.Object) -> str:
    def link(match: re.Match) -> str:
        tilde, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if tilde else name
        return f'<autoref identifier="{_target(obj, name)}" optional><code>{shown}</code></autoref>'

    return ROLE.sub(link, text)


def _walk(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _convert(obj.docstring.value, obj)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring in a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg)
