"""HTTP API blueprints, one per resource. All routes live under /api/v1 (see openapi.py)."""
