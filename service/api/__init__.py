"""HTTP only: the app factory, routes, probes, field validation, the token check, the OpenAPI document, the
ops console and docs pages, and the request hooks that feed logs and metrics.

Only the composition root (service.runtime) imports this package.
"""
