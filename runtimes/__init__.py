"""Device runtimes: ``runtimes.python`` (this package) and ``runtimes/js`` (browser, Node)."""
