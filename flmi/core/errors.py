"""Exceptions raised by flmi.

Every error names what was wrong (the config key, the file, the site or the
tensor) and, where there is one, the fix. A remote failure is never an
exception inside the federation loop: it travels as a
:class:`flmi.core.messages.ClientError`.
"""

from __future__ import annotations


class FlmiError(Exception):
    """Base class of every error flmi raises on purpose."""


class ConfigError(FlmiError):
    """A configuration key is unknown, missing, of the wrong type or out of range."""


class DataError(FlmiError):
    """A data file is missing, unreadable or holds values the task cannot use."""


class LabelError(DataError):
    """A label lies outside the task's classes."""


class PartitionError(DataError):
    """A partition left a site with fewer examples than allowed."""


class SchemaError(FlmiError):
    """Tensors do not match the model's schema (names, shapes or dtypes)."""


class NonFiniteError(FlmiError):
    """A tensor holds NaN or Inf values."""


class RunDirError(FlmiError):
    """The run directory cannot be used without losing what it already holds."""


class RoundFailedError(FlmiError):
    """Rounds aggregated nothing as often as ``federation.max_failed_rounds`` allows.

    A round aggregates nothing when fewer valid updates than
    ``federation.min_sites`` arrive (every update rejected, every site failed):
    the global model is left unchanged, and the run stops rather than end as
    if it had trained. The message names each site's reason.
    """
