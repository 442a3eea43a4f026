"""The web console (`timelapse ui`, the `ui` extra): pages, the REST API under `/api/`, tokens with roles, and
Prometheus metrics. It reads state directories as `engine.open` does, beside a running writer, and acts on them
through `engine.control`."""
