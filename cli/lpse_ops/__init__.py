"""lpse-ops: install, back up, harden and recover SPSE across the LPSE fleet."""

__version__ = "0.1.0"
