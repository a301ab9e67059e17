"""Monitors: activation statistics per site and layer, streamed over forwards (``monitors:``, ``steerplug stats``)."""
