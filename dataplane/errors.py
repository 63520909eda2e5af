"""Errors raised by the dataplane, each with a message a person can act on."""
from __future__ import annotations

import errno as _errno


class DataplaneError(Exception):
    """Base class: carries the errno the C shim returned (0 if none)."""

    def __init__(self, message: str, errno: int = 0):
        super().__init__(message)
        self.errno = errno


class ConfigError(DataplaneError):
    """The configuration is invalid; the message names file, key and value."""


class EalError(DataplaneError):
    """DPDK's EAL could not start or stop."""


class PortError(DataplaneError):
    """A port could not be attached, configured or started."""


class WorkerError(DataplaneError):
    """A worker could not be created or run."""


def error_for(rc: int, what: str, detail: str = "", cls: type[DataplaneError] = DataplaneError) -> DataplaneError:
    err = -rc
    name = _errno.errorcode.get(err, str(err))
    text = f"{what}: {detail}" if detail else what
    return cls(f"{text} [{name}]", err)
