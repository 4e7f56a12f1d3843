"""A small FastAPI shop whose orders are fulfilled by a pypgflow workflow (see README.md)."""
