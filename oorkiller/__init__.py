"""oorkiller: the Out Of Resource killer."""

__version__ = "0.1.0"
PROGRAM = "oorkiller"
