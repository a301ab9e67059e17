"""Engine adapters: the only modules that know how an engine calls the model.

An adapter turns the engine's calling conventions into the evidence of the sequence model
(:mod:`steerplug.runtime.sequence`): each forward's tokens, where they sit in their rows' sequences, which
prompt each row came from. :mod:`steerplug.engines.transformers` serves Hugging Face Transformers; a new
engine is a sibling module, never a patch to the runtime.
"""
