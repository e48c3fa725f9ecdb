"""The actuator: health, info and metrics over HTTP for the platform running the sidecar."""
