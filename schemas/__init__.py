"""Typed messages: the only contract between actors.

Every message on the bus is a ``msgspec.Struct`` declared here (frozen, keyword-only, tagged where
it belongs to a union). Encoders and decoders are built once in :mod:`schemas.codec`.
"""
