"""The base of every config Struct: frozen, keyword-only, unknown keys are errors."""

from __future__ import annotations

import msgspec


class Cfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class TaggedCfg(Cfg, frozen=True, kw_only=True, tag_field="kind"):
    pass
