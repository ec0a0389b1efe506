"""tapeworker: applies task destinations to a tape library."""

__version__ = "0.1.0"
