"""Engine adapters beyond Transformers' ``generate()``: serving engines that batch many requests per forward.

Each adapter is the only place that knows how its engine calls the model (DESIGN.md §1/§6).
:mod:`steerplug.engines.vllm_plugin` is vLLM's entry point; the modules without ``vllm`` in their name
know nothing about vLLM and are tested without it.
"""
