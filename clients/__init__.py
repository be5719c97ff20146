"""Typed callers of other actors' services over the bus (used by actors)."""
