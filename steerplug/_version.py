"""The version of steerplug (one place; the package and the files it writes read it here)."""

__version__ = "0.2.0"
