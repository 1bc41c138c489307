"""Shared test helpers: real gunicorn processes and initialised stores."""
