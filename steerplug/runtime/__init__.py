"""Runtime: position context, hook runners, attach/detach handles."""
