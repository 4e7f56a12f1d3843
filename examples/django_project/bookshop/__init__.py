"""A small Django project whose orders are fulfilled by a pypgflow workflow (see README.md)."""
