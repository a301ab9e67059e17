"""Engine adapters: the only modules that know how an engine calls the model.

An adapter turns the engine's calling conventions into the evidence of the sequence model
(:mod:`steerplug.runtime.sequence`): each forward's tokens, where they sit in their rows' sequences, which
prompt each row came from. :mod:`steerplug.engines.transformers` serves Hugging Face Transformers; a new
engine is a sibling module, never a patch to the runtime.

vLLM (:mod:`steerplug.engines.vllm_plugin`, its ``vllm.general_plugins`` entry point) flattens a batch to
``[num_tokens, hidden]``: :mod:`~steerplug.engines.slots` gives every token its own request's recipe slot,
prompt end and strength factor; the modules without ``vllm`` in their name know nothing about vLLM and are
tested without it.
"""
