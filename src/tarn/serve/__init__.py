"""The backend: a REST server that follows the registry's production alias (hot swap)."""
