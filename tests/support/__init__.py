"""Test support: profiles pointing at a test nats-server, process helpers, a test actor."""
