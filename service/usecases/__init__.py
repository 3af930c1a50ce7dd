"""What the service does, one small function per use case, independent of HTTP.

Each takes its dependencies (a `Deps`, built once by service.runtime) and the
validated request values; a route calls exactly one of them. An image named by
URL or path is read inside the use case, through its service.inputs object.
"""
