"""layotto-fast: an application-runtime sidecar with Layotto's API and compiled hot paths."""

__version__ = "0.1.0"
