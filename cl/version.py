"""The package version, in a core module of its own (core modules never import `cl`)."""

__version__ = "0.1.0"
