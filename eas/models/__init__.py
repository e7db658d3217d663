"""Layer 2, the models: the one module that knows model internals (arch), the embedded mini-LLaVA and
LLaVA-1.5 behind one interface, building a model by name (zoo), the projector's alignment, batched
greedy generation with a KV cache, and parameter-efficient training on Accelerate. Knows nothing of EAS."""
