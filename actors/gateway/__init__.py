"""The gateway actor: openai_api.py (the wire format, pure), keys.py (client keys), handlers.py
(HTTP over the bus), actor.py (lifecycle)."""
