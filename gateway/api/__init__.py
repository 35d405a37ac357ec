"""The HTTP surface: app wiring, one module per resource, request parsing, auth, the error envelope."""
