"""Everything that speaks Milvus, one module per job.

filters (expressions from caller values, namespace scopes; pure), meta (the embedding space and
calibrated threshold a collection records; pure), connection (the pymilvus client, capabilities,
schema, retries), lite (Milvus Lite's gate and flusher), search (vector searches, one hit per key,
duplicates), records (VectorStore: the record operations). Import from the modules; this package
imports nothing, so that service.store.filters can be used without loading pymilvus.
"""
