"""One module per CLI command; each exposes `register(subparsers)`."""

DEFAULT_URL = "http://127.0.0.1:8765"
