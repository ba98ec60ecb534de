"""The Python device runtime: verified model store, offline scoring, telemetry outbox, sync agent.

    from runtimes.python import Scorer
    scorer = Scorer.from_bundle("churn-v1.tar", "keys/public.pem")
    scorer.score(record).probability

Depends only on the ``[device]`` extra (numpy, onnxruntime, cryptography, paho-mqtt); never
imports the compiler or the fleet server.
"""

from runtimes.python.errors import (
    BackendUnavailableError,
    DeviceError,
    DownloadError,
    HealthCheckError,
    InstallError,
    RollbackRefusedError,
    ScoringInputError,
)
from runtimes.python.scorer import Prediction, Scorer

__all__ = [
    "BackendUnavailableError",
    "DeviceError",
    "DownloadError",
    "HealthCheckError",
    "InstallError",
    "Prediction",
    "RollbackRefusedError",
    "Scorer",
    "ScoringInputError",
]
