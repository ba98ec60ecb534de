"""edgefleet: compile trained models into signed bundles and run them on offline devices.

The package laid out along the path a model travels::

    compiler/      trained model -> frontends -> IR -> targets -> signed bundle
    edgefleet/     shared pieces both ends need: bundle format, keys, CLI, sample data
    runtimes/      device runtimes (Python, JS) that verify and score bundles
    fleet_server/  registry, rollouts, telemetry, monitoring
"""

__version__ = "0.1.0"
