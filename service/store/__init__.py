"""Everything that speaks Milvus (issue 9 layout: client, schema, ids, flusher, records, filters).

Transitional: while the legacy module service/store.py still exists next to this package,
this package shadows it (Python prefers a package over a module of the same name), so
`from service.store import VectorStore` would break. Until the refactor moves that code
into this package, run the legacy module's code in this package's namespace: the names,
`__name__` and monkeypatching behave exactly as before. Once service/store.py is gone this
file does nothing; replace it with the refactor's version when merging.
"""

from pathlib import Path

_LEGACY = Path(__file__).resolve().parent.parent / "store.py"
if _LEGACY.is_file():
    exec(compile(_LEGACY.read_text(encoding="utf-8"), str(_LEGACY), "exec"), globals())  # noqa: S102
