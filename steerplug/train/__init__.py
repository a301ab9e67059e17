"""``steerplug.train``: learned steering. Fit a steering vector (preference objective), LinEAS-style affine
maps (distributional objective) or a low-rank subspace edit (ReFT-style) by gradient descent on the frozen
model, and write an ordinary recipe bundle.

See :func:`train` and ``steerplug train --help``.
"""

from steerplug.train.api import train
from steerplug.train.data import TrainingData
from steerplug.train.methods import METHODS
from steerplug.train.objectives import OBJECTIVES
from steerplug.train.result import Trained

__all__ = ["METHODS", "OBJECTIVES", "Trained", "TrainingData", "train"]
