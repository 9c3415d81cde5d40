"""lamina: a daemonless container-image toolkit."""

__version__ = "0.1.0"
