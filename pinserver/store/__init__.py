"""Storage of roots, manifests, publish events and client reports.

:mod:`pinserver.store.base` defines the interface; ``sqlite`` is the embedded
default and ``postgres`` serves several replicas. :func:`open_store` picks one.
"""
