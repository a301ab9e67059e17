"""Operations: the edits an intervention applies to an activation."""

from steerplug.ops.base import Edit, Operation, OpTarget

__all__ = ["Edit", "OpTarget", "Operation"]
