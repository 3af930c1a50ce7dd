"""HTTP only: the app factory, the routes and probes (each declared once with service.api.endpoint.endpoint:
its right, body model and answers), the request bodies as pydantic models (contract.py), the OpenAPI document
generated from both (openapi.py), the token check, the ops console and docs pages, and the request hooks that
feed logs and metrics.

Only the composition root (service.runtime) imports this package.
"""
