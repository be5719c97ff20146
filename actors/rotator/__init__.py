"""The rotator actor: training phases, scheduled model rotation, warm tiers, queue-depth scaling (the
paper's §3.4 and §5.2; Mirador's tiered warming).

    phases.py     pure: what a phase wants loaded, each model's warm tier (hot / warm / cold), phase changes
    rotation.py   pure: the next rotation picks (not recently loaded, most diverse families)
    planner.py    pure: per-host unloads then loads within every card's memory (gpu_host's memory model),
                  or a refusal naming the card and sizes
    scaling.py    pure: queue-depth scaling (another instance, a fast model, or overflow to the cloud; undo
                  when idle)
    overflow.py   pure: a SetOverflow against the stored switch (the rotator writes orch_overflow)
    messages.py   the actor's message union (commands, model events, host changes, timers)
    executor.py   carrying out plan steps: load / unload commands, following the hosts' events and state
    conductor.py  choose -> plan -> execute -> re-plan; the scaling tick
    actor.py      the actor: orch_phase, orch_overflow, commands, schedules, host watch; one handle()
    cli.py        ``orchestra phase show|list|set`` and ``orchestra rotate now``
"""
