"""The reliability suite's fixtures live in rel_fixtures.py (shared with tests/security)."""
from rel_fixtures import figures, hub, relhub  # noqa: F401
