"""ntf-server: a self-hostable, SimpleX-compatible push-notification server."""

__version__ = "0.1.0"
