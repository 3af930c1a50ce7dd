"""List a namespace's records page by page in id order, so an ERP can reconcile its catalog with the store."""

from __future__ import annotations

from service.store.records import Page
from service.usecases.deps import Deps


def list_records(deps: Deps, namespace: str, after_id: int, limit: int) -> Page:
    """The namespace's next `limit` records with an id above `after_id`, and where the page after starts."""
    return deps.store.list_records(deps.store.scope(namespace), after_id, limit)
