"""Which records a call may touch: every expression the store sends starts with the caller's namespace.

Collections created since namespaces exist carry `namespace` and `attrs` fields. A collection created by
an earlier imgsim has neither; rather than refuse to start on it (its ids and records stay valid), the
store serves it as the default namespace without attributes, and anything that needs the new fields
(another namespace, attrs, a filter) is refused with a Conflict naming the way out: a new
MILVUS_COLLECTION and a re-import.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conf.errors import Conflict
from service.store.filters import ATTRS_FIELD, DEFAULT_NAMESPACE, NAMESPACE_FIELD, all_of, namespace_expr
from service.store.schema import Layout

TENANCY_ONLY = (NAMESPACE_FIELD, ATTRS_FIELD)


def legacy_conflict(collection: str, what: str) -> Conflict:
    """The refusal for `what` (namespaces, attrs, filters) on a collection of an earlier imgsim."""
    return Conflict(f"collection {collection!r} was created by an earlier imgsim without the 'namespace' and "
                    f"'attrs' fields, so it serves the default namespace only, without {what}. To use namespaces, "
                    "attrs and filters, set MILVUS_COLLECTION to a new name and re-import the images (python "
                    "main.py import DIR, or the add endpoints); the README section 'Namespaces' explains it.",
                    reason="collection_without_namespaces")


class Scope:
    """The namespace expressions and field lists of one collection, given its layout."""

    def __init__(self, layout: Layout, collection: str) -> None:
        self.layout = layout
        self.collection = collection

    def require(self, namespace: str, attrs: bool = False, filtered: bool = False) -> None:
        """Raise Conflict if this collection cannot serve the namespace, attributes or filter asked for."""
        if self.layout.tenancy:
            return
        if namespace != DEFAULT_NAMESPACE:
            raise legacy_conflict(self.collection, "other namespaces")
        if attrs:
            raise legacy_conflict(self.collection, "attributes ('attrs')")
        if filtered:
            raise legacy_conflict(self.collection, "attributes to filter on ('filter')")

    def expr(self, namespace: str, *conditions: str) -> str:
        """The namespace's records that also meet every (already safe) condition."""
        self.require(namespace)
        return all_of(namespace_expr(namespace) if self.layout.tenancy else "", *conditions)

    def fields(self, names: Iterable[str]) -> list[str]:
        """The fields of `names` this collection has (a legacy one lacks namespace and attrs)."""
        return [n for n in names if self.layout.tenancy or n not in TENANCY_ONLY]

    def extras(self, namespace: str, attrs: dict[str, Any]) -> dict[str, Any]:
        """The tenancy fields of a row to write (none in a legacy collection)."""
        if not self.layout.tenancy:
            self.require(namespace, attrs=bool(attrs))
            return {}
        return {NAMESPACE_FIELD: namespace, ATTRS_FIELD: attrs}
