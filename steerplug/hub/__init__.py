"""Sharing recipes: remote sources (``hf://``, ``https://``), drop-in names, the steerplug cache, publishing.

The source plugins in ``steerplug.builtin_plugins`` (``source_hf``, ``source_https``, ``source_dropin``) are
thin wrappers around these modules. Remote bundles are downloaded into the steerplug cache, every artifact
verified against its sha256 before the cache entry appears, and the cached folder is the bundle root that
artifact paths are confined to.
"""
