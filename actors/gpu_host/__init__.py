"""gpu_host: the local tier. One process per card group serves its local models with llama.cpp (continuous
batching) or ctransformers, keeps memory accounting per card, and reports its state to KV ``orch_hosts``.

    actor.py         the actor: dispatches, commands, results, host state and heartbeat
    manager.py       the card group's state and its single writer: load / unload / swap / keep-alive
    memory.py        pure: memory footprint, quantisation rule, placement (one card or tensor_split)
    policy.py        pure: eviction (load time x decayed use) and keep-alive tiers (hot / warm / cold)
    library.py       model files: package resources, assembled chunks, storage tiers; GGUF headers; load times
    engine.py        the engine protocol, one thread per model, generation handles
    llama_engine.py  llama.cpp engine; batching.py its continuous-batching scheduler
    ctrans_engine.py ctransformers engine (GGML-era architectures; not Gemma 3)
    prompts.py       chat formats; text.py stop sequences and UTF-8 across tokens
"""
