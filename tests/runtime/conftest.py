"""Fixtures of the runtime tests."""

from tests.runtime.deploy_support import deployment

__all__ = ["deployment"]
