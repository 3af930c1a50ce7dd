"""The product around the model: inputs, use cases, the Milvus store, the HTTP layer, and the composition root."""
