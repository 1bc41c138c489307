"""Demo-only keys and documents for ``pinserver demo`` (public, worthless)."""
