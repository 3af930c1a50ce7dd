"""List records in id order: a namespace's page by page, so an ERP can reconcile its catalog with the store; and
every namespace's window by window, so a reindex can read the catalog of a running service (export)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.store.records import Page
from service.usecases.deps import Deps


def list_records(deps: Deps, namespace: str, after_id: int, limit: int) -> Page:
    """The namespace's next `limit` records with an id above `after_id`, and where the page after starts."""
    return deps.store.list_records(deps.store.scope(namespace), after_id, limit)


@dataclass(frozen=True)
class Export:
    """A window of the rows of every namespace, and what the collection is."""

    collection: dict[str, Any]  # name, alias, space, space_summary, tenancy, regions
    total: int
    rows: list[dict[str, Any]]


def export_rows(deps: Deps, after: int, upto: int, limit: int) -> Export:
    """The rows of EVERY namespace with after < id <= upto (at most `limit`, sorted by id), read Strong.

    It looks past namespaces on purpose, like the store's count_all: it is the admin's way to read the whole
    catalog (a reindex of a Milvus Lite file the service holds), never a tenant's. `collection.name` is the
    collection itself, not the alias the service may reach it through.
    """
    store = deps.store
    store.connect()
    rows = sorted(store.rows_window(after, upto, limit), key=lambda r: r["id"])
    space = store.space
    collection = {
        "name": store.collection,
        "alias": store.alias,
        "space": space.digest if space is not None else None,
        "space_summary": space.summary if space is not None else "",
        "tenancy": store.layout.tenancy,
        "regions": store.layout.regions,
    }
    exported = [{**r, "region": r["region"] or None} for r in rows]
    return Export(collection, store.count_all(), exported)
