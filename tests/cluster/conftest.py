"""The cluster suite's fixtures live in cluster_site.py (importable by the tests, unlike a conftest)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, HERE)

from cluster_site import cache, site  # noqa: E402,F401
