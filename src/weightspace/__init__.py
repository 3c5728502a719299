"""weightspace: the weights of a 3D shape generator, treated as data."""

__version__ = "0.1.0"
