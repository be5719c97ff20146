"""gpu_host: the local tier. One process per card group serves its local models with llama.cpp (continuous
batching) or ctransformers, keeps memory accounting per card, and reports its state to KV ``orch_hosts``.

    actor.py         the actor: one handle() over messages.py (dispatches, commands, host state, preload)
    manager.py       the card group's state and its single writer: load / unload / swap / keep-alive
    residents.py     what it holds, as data: Resident, engine construction, the KV record, hot models, oom
    (memory model and eviction: policy/memory.py, policy/eviction.py; model files: weights/library.py)
    engine.py        the engine protocol, one thread per model, generation handles
    llama_engine.py  llama.cpp engine; batching.py its continuous-batching scheduler
    ctrans_engine.py ctransformers engine (GGML-era architectures; not Gemma 3)
    prompts.py       chat formats; text.py stop sequences and UTF-8 across tokens
"""
