"""HTTP only: the app factory, routes, probes, field validation, the token check and the OpenAPI document.

Only the composition root (service.runtime) imports this package.
"""
