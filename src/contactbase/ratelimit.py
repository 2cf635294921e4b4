"""Per-Space, per-endpoint request limits."""

ENDPOINTS = ("create", "get", "list", "update", "export")
# Requests per minute, per Space, unless the Space overrides them (`contactbase space set-limit`).
DEFAULT_LIMITS = {"create": 60, "get": 30, "list": 15, "update": 60, "export": 5}
