"""pinserver: a signed pin-configuration channel for TLS certificate pinning.

The public surface is small: :mod:`pinserver.client` for applications,
:mod:`pinserver.errors` for what can go wrong, and the ``pinserver`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
