"""Device runtime errors.

    DeviceError (EdgefleetError)      root for the device runtime
    ├── ScoringInputError              a record does not match the model's input schema (also an
    │                                  edgefleet InputError, so ``field`` and ``reason`` are kept)
    ├── BackendUnavailableError        no installed runtime can run any artifact of the bundle
    ├── InstallError                   a bundle was refused; the active model is untouched
    │   ├── RollbackRefusedError       its version is not above the active one
    │   └── HealthCheckError           its canary rows did not reproduce the expected outputs
    └── DownloadError                  a transfer failed, was cut, or exceeded its length
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError, InputError


class DeviceError(EdgefleetError):
    """Root of the device runtime's errors."""


class ScoringInputError(DeviceError, InputError):
    """A record does not match the manifest's input schema; ``field`` names the field."""


class BackendUnavailableError(DeviceError):
    """None of the bundle's artifacts can run with the runtimes installed here."""


class InstallError(DeviceError):
    """A bundle was not installed; the previously active model keeps scoring."""


class RollbackRefusedError(InstallError):
    """The bundle's version is not above the active version and no signed rollback ordered it."""


class HealthCheckError(InstallError):
    """The installed bundle failed its canary replay and was reverted."""


class DownloadError(DeviceError):
    """A download failed, was cut short, or exceeded its maximum length."""
