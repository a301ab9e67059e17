"""Built-in plugins. Every module in this package is registered as a plugin, exactly like third-party
plugins are (which come from the ``steerplug`` entry-point group)."""
