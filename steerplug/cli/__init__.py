"""The ``steerplug`` command line; every sub-command is a plugin."""
