"""Everything from image bytes to a unit vector: decoding, transforms, the embedder, the CPU budget.

No Flask and no Milvus in here, and nothing from `service`: the service builds on this package.
"""
