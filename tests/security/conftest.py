"""The security suite shares the reliability suite's harness and fixtures (tests/reliability)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability"))

from rel_fixtures import figures, hub, relhub  # noqa: E402,F401
