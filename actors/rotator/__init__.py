"""The rotator actor: training phases, scheduled model rotation, warm tiers, queue-depth scaling (the
paper's §3.4 and §5.2; Mirador's tiered warming).

    policy/phases.py, policy/rotation.py, policy/planner.py, policy/scaling.py: the pure decisions (what a
                  phase wants loaded; the next rotation picks; per-host unloads then loads within every
                  card's memory; queue-depth scaling, undone when idle)
    overflow.py   pure: a SetOverflow against the stored switch (the rotator writes orch_overflow)
    messages.py   the actor's message union (commands, model events, host changes, timers)
    executor.py   carrying out plan steps: load / unload commands, following the hosts' events and state
    conductor.py  choose -> plan -> execute -> re-plan; the scaling tick
    actor.py      the actor: orch_phase, orch_overflow, commands, schedules, host watch; one handle()
    (cli/rotator.py: ``orchestra phase show|list|set`` and ``orchestra rotate now``)
"""
