"""``python -m actors.cache``: the cache actor."""

from actors.cache.actor import CacheActor
from bus.runner import main

main(CacheActor)
