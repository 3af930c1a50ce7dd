"""Benchmarks for imgsim (retrieval quality, corpus building).

Nothing in here is imported by the service itself; the package exists so the
tools can be run as ``python -m bench.<module>`` from the repository root.
"""
