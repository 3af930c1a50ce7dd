"""Everything that speaks Milvus, one module per job.

client (the pymilvus import, connection, retries, keepalive), schema (schema and
index negotiation), ids (record ids), filters (expressions from caller text),
flusher (Milvus Lite's background flush), records (VectorStore: the record
operations). Import from the modules; this package imports nothing, so that
`service.store.ids` can be used without loading pymilvus.
"""
