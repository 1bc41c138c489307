"""``pinserver.server.wsgi:app`` for gunicorn: settings from the environment.

The gunicorn master checks the store's integrity once at start (see
``gunicorn.conf.py``), so workers skip it.
"""

from __future__ import annotations

from pinserver.server import create_app

app = create_app({"CHECK_INTEGRITY": False})
