"""The paper's cost arithmetic (§1.2, §8.1-8.3, §11.2), recomputed from a workload and the pricing
table, and checked against what the paper claims (pure).

A workload is tokens per month per tier: the local volume that would otherwise go to Together (§8.1),
Together tokens with and without the two extra P40s (§8.3), premium tokens per model (§8.2), plus
the hardware price and the electricity bill. The defaults are the paper's. Prices come from the
profile (``models.<name>.price``, ``price_per_million`` of local models; the lab profile has §8's). A
profile without the paper's llama3.1-70b (the local one) prices its own: unless the workload names
them, its best local model and its first Together model stand in (``models_of``).

    simulate(workload, prices) -> Simulation(rows, notes)

Each row: section, what, the paper's figure, ours, and a verdict: ``ok`` (the paper's arithmetic
holds), ``WRONG`` (it does not; the note says why) or ``note`` (a modelling remark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.config.models import CloudModel, LocalModel
from schemas.config.root import OrchestraConfig

Verdict = Literal["ok", "WRONG", "note"]
PAPER_TOGETHER_NOW_USD = (50.0, 100.0)  # §8.3 option A / §11.2: "Together AI: $50-100/month"
PAPER_TOGETHER_EXPANDED_USD = (10.0, 20.0)  # §8.3 option B / §11.2: "$10-20/month"
PAPER_TOGETHER_MODEL = "together/llama3.1-70b"  # §8.1: $0.88/M
PAPER_LOCAL_MODEL = "llama3.1-70b"  # §8.1: ~$0.003/M, electricity only
Pair = Annotated[list[Annotated[float, Meta(ge=0)]], Meta(min_length=2, max_length=2)]


class Workload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tokens in millions per month; money in USD. Every default is the paper's."""

    volumes_m: list[Annotated[float, Meta(gt=0)]] = msgspec.field(default_factory=lambda: [100.0, 200.0])
    together_model: str | None = None  # None: the paper's PAPER_TOGETHER_MODEL, or the profile's (models_of)
    local_model: str | None = None  # None: the paper's PAPER_LOCAL_MODEL, or the profile's
    expansion_usd: Annotated[float, Meta(ge=0)] = 600.0  # +2 P40s
    electricity_now_usd: Annotated[float, Meta(ge=0)] = 40.0  # §8.3 / §11.2 (§8.1 says ~$30)
    electricity_expanded_usd: Annotated[float, Meta(ge=0)] = 50.0  # §8.3 / §11.2 (§8.1 says ~$40)
    premium_m: dict[str, Annotated[float, Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: {"gpt-4o": 20.0, "gemini-2.5-pro": 10.0, "claude-sonnet": 6.0}  # §8.2
    )
    output_share: Annotated[float, Meta(ge=0, le=1)] = 0.0  # the paper prices every token at the input price
    together_now_m: Pair | None = None  # None: what the paper's $50-100 buys at the Together price
    together_expanded_m: Pair | None = None  # None: what the paper's $10-20 buys
    cloud_only_usd: Pair = msgspec.field(default_factory=lambda: [3000.0, 5000.0])  # §1.2 / §11.2
    cloud_only_volume_m: Annotated[float, Meta(gt=0)] = 200.0  # §1.2: "Cost for 200M tokens/month"


@dataclass(frozen=True)
class Span:
    lo: float
    hi: float

    @classmethod
    def of(cls, a: float, b: float | None = None) -> Span:
        b = a if b is None else b
        return cls(min(a, b), max(a, b))

    def __add__(self, other: Span | float) -> Span:
        o = other if isinstance(other, Span) else Span.of(other)
        return Span(self.lo + o.lo, self.hi + o.hi)

    def scale(self, k: float) -> Span:
        return Span.of(self.lo * k, self.hi * k)

    def within(self, paper: Span, tolerance: float) -> bool:
        return paper.lo - tolerance <= self.lo and self.hi <= paper.hi + tolerance

    def close(self, paper: Span, tolerance: float) -> bool:
        return abs(self.lo - paper.lo) <= tolerance and abs(self.hi - paper.hi) <= tolerance


@dataclass(frozen=True)
class Row:
    section: str
    what: str
    paper: str
    ours: str
    verdict: Verdict
    note: str = ""
    value: Span | None = None  # ours, as numbers (tests and --json)


@dataclass
class Simulation:
    workload: Workload
    prices: dict[str, float]  # USD per million tokens, as used
    rows: list[Row] = field(default_factory=list)

    def row(self, section: str, what: str) -> Row:
        for r in self.rows:
            if r.section == section and r.what == what:
                return r
        raise KeyError(f"{section} {what}")


def usd(x: float | Span, places: int = 2) -> str:
    if isinstance(x, Span):
        return usd(x.lo, places) if abs(x.hi - x.lo) < 0.005 else f"{usd(x.lo, places)}-{usd(x.hi, places)}"
    return f"${x:,.{places}f}"


def months(x: Span) -> str:
    return f"{x.lo:.1f}" if abs(x.hi - x.lo) < 0.05 else f"{x.lo:.1f}-{x.hi:.1f}"


def pct(x: Span) -> str:
    return f"{x.lo * 100:.1f}%" if abs(x.hi - x.lo) < 5e-4 else f"{x.lo * 100:.1f}-{x.hi * 100:.1f}%"


def blended(model: CloudModel, output_share: float) -> float:
    return model.price.input * (1 - output_share) + model.price.output * output_share


def _cloud(cfg: OrchestraConfig, name: str, flag: str) -> CloudModel:
    model = cfg.models.get(name)
    if not isinstance(model, CloudModel):
        known = ", ".join(n for n, m in cfg.models.items() if isinstance(m, CloudModel)) or "none"
        raise ValueError(
            f"{flag}: {name!r} is not a cloud model of profile {cfg.profile!r} (its cloud models: {known})"
        )
    return model


def _local_price(cfg: OrchestraConfig, name: str) -> float:
    model = cfg.models.get(name)
    if not isinstance(model, LocalModel):
        known = ", ".join(n for n, m in cfg.models.items() if isinstance(m, LocalModel)) or "none"
        raise ValueError(
            f"--local-model: {name!r} is not a local model of profile {cfg.profile!r} (its local models: {known})"
        )
    return model.price_per_million if model.price_per_million is not None else cfg.budgets.local_cost.per_million_usd


def models_of(w: Workload, cfg: OrchestraConfig) -> Workload:
    """The workload with its local and Together models named: as given, else the paper's where the
    profile has them, else the profile's own (its highest-quality local model; its first model of a
    provider in the together tier)."""
    local, together = w.local_model, w.together_model
    if local is None:
        ours = [n for n, m in cfg.models.items() if isinstance(m, LocalModel)]
        if PAPER_LOCAL_MODEL in ours or not ours:
            local = PAPER_LOCAL_MODEL
        else:
            local = max(ours, key=lambda n: cfg.models[n].quality)  # the first of the best
    if together is None:
        ours = [
            n
            for n, m in cfg.models.items()
            if isinstance(m, CloudModel)
            and m.provider in cfg.providers
            and cfg.providers[m.provider].tier == "together"
        ]
        together = PAPER_TOGETHER_MODEL if PAPER_TOGETHER_MODEL in cfg.models or not ours else ours[0]
    return msgspec.structs.replace(w, local_model=local, together_model=together)


def _local_energy(cfg: OrchestraConfig, name: str) -> tuple[float, float, float] | None:
    """(USD per million tokens from the cards' watts and the model's tokens/s, watts, tokens/s)."""
    model = cfg.models.get(name)
    if not isinstance(model, LocalModel) or not model.speed_tps or not model.cards:
        return None
    watts = sum(cfg.cards[c].watts or 0 for c in model.cards if c in cfg.cards)
    if not watts:
        return None
    hours = 1e6 / model.speed_tps / 3600
    return watts / 1000 * hours * cfg.budgets.local_cost.kwh_usd, watts, model.speed_tps


@dataclass
class _Prices:
    together: float  # USD per million tokens, blended by output_share
    local: float
    premium: dict[str, float]
    extra_power: float  # USD/month the two extra cards add


def simulate(w: Workload, cfg: OrchestraConfig) -> Simulation:
    """ValueError names the flag to pass when a model of the workload is not in the profile."""
    w = models_of(w, cfg)
    assert w.local_model is not None and w.together_model is not None
    together = _cloud(cfg, w.together_model, "--together-model")
    p = _Prices(
        together=blended(together, w.output_share),
        local=_local_price(cfg, w.local_model),
        premium={name: blended(_cloud(cfg, name, "--premium"), w.output_share) for name in w.premium_m},
        extra_power=w.electricity_expanded_usd - w.electricity_now_usd,
    )
    sim = Simulation(w, {w.together_model: p.together, w.local_model: p.local, **p.premium})
    _section_8_1(sim, w, p)
    premium = _section_8_2(sim, w, p)
    opt_a, opt_b = _options(sim, w, p, premium)
    _cloud_only(sim, w, p, premium, opt_a, opt_b)
    _local_cost(sim, w, p, cfg)
    return sim


def _add(sim: Simulation, section: str, what: str, paper: str, ours: str, ok: bool | None, note: str = "",
         value: Span | None = None) -> None:  # fmt: skip
    """One row: ``ok`` None is a remark (``note``), else the check of the paper's figure."""
    verdict: Verdict = "note" if ok is None else ("ok" if ok else "WRONG")
    sim.rows.append(Row(section, what, paper, ours, verdict, note, value))


def _section_8_1(sim: Simulation, w: Workload, p: _Prices) -> None:
    """Together llama 70B vs the same tokens on the local 70B, and the ROI of two more P40s."""
    claims = {100.0: (88.0, 0.30, 87.70, 6.8), 200.0: (176.0, 0.40, 175.60, 3.4)}  # §8.1's code block
    roi = []
    for v in w.volumes_m:
        t, loc = v * p.together, v * p.local
        saved, payback = t - loc, w.expansion_usd / t if t else float("inf")
        net = w.expansion_usd / (saved - p.extra_power) if saved > p.extra_power else float("inf")
        roi.append(payback)
        tag = f"{v:g}M tokens/month"
        pt, pl, ps, pr = claims.get(v, (None, None, None, None))
        _add(sim, "§8.1", f"{w.together_model} @ {tag}", _money(pt), usd(t), _near(t, pt), value=Span.of(t))
        wrong_local = pl is not None and abs(loc - pl) >= 0.005
        why = f"{usd(p.local, 3)}/M x {v:g}M = {usd(loc)}; the paper's {usd(pl or 0)} matches neither its own "
        why += f"{usd(p.local, 3)}/M nor its $0.30 at 100M"
        _add(sim, "§8.1", f"local {w.local_model} @ {tag}", _money(pl), usd(loc), _near(loc, pl),
             why if wrong_local else "", Span.of(loc))  # fmt: skip
        why = f"follows from the wrong local figure: {usd(t)} - {usd(loc)} = {usd(saved)}"
        _add(sim, "§8.1", f"savings @ {tag}", _money(ps), usd(saved), _near(saved, ps),
             why if ps is not None and abs(saved - ps) >= 0.005 else "", Span.of(saved))  # fmt: skip
        why = f"{usd(w.expansion_usd, 0)} / {usd(t)}; net of the new cards' +{usd(p.extra_power, 0)}/month "
        why += f"electricity: {net:.1f} months"
        _add(sim, "§8.1", f"ROI of +2 P40s @ {tag}", "-" if pr is None else f"{pr:.1f} months",
             f"{payback:.1f} months", _near(payback, pr, 0.05), why, Span.of(payback))  # fmt: skip
    r = Span.of(min(roi), max(roi))
    ok = r.close(Span(3, 6), 0.05)
    _add(sim, "§8.1", '"pays for itself vs Together AI in 3-6 months"', "3-6 months", f"{months(r)} months", ok,
         "" if ok else f"the section's own figures give {months(r)} months", r)  # fmt: skip


def _section_8_2(sim: Simulation, w: Workload, p: _Prices) -> Span:
    """Premium validation per model, and the Together estimate. Returns the premium total."""
    claims = {"gpt-4o": 22.0, "gemini-2.5-pro": 12.50, "claude-sonnet": 18.0}
    total = 0.0
    for name, m in w.premium_m.items():
        cost = m * p.premium[name]
        total += cost
        claim = claims.get(name)
        _add(sim, "§8.2", f"{name} @ {m:g}M tokens", _money(claim), usd(cost), _near(cost, claim), value=Span.of(cost))
    premium = Span.of(total)
    why = "" if w.output_share else "every token at the input price, as the paper does (--output-share)"
    _add(sim, "§8.2", "premium APIs per month", "$50-55", usd(premium), premium.within(Span(50, 55), 0.005), why,
         premium)  # fmt: skip
    est = Span(10 * 0.80, 20 * 1.20)  # the paper's own "10-20M tokens at $0.80-1.20/M"
    why = f"10M x $0.80 = {usd(est.lo)}, 20M x $1.20 = {usd(est.hi)}; $20-40 needs 17-50M tokens"
    _add(sim, "§8.2", 'Together "conservative" (10-20M tokens at $0.80-1.20/M)', "$20-40", usd(est),
         est.close(Span(20, 40), 0.5), why, est)  # fmt: skip
    return premium


def _options(sim: Simulation, w: Workload, p: _Prices, premium: Span) -> tuple[Span, Span]:
    """§8.3 and §11.2: option A (4x P40) vs option B (+2 P40s), their difference and the payback."""
    default_now, default_exp = Span(*PAPER_TOGETHER_NOW_USD), Span(*PAPER_TOGETHER_EXPANDED_USD)
    now_m = Span.of(*w.together_now_m) if w.together_now_m else default_now.scale(1 / p.together)
    exp_m = Span.of(*w.together_expanded_m) if w.together_expanded_m else default_exp.scale(1 / p.together)
    a = Span.of(w.electricity_now_usd) + now_m.scale(p.together) + premium
    b = Span.of(w.electricity_expanded_usd) + exp_m.scale(p.together) + premium
    _add(sim, "§8.3", f"option A: 4x P40 (Together {now_m.lo:.1f}-{now_m.hi:.1f}M tokens)", "$140-195/month", usd(a),
         a.within(Span(140, 195), 0.005), value=a)  # fmt: skip
    _add(sim, "§8.3", f"option B: +2 P40s (Together {exp_m.lo:.1f}-{exp_m.hi:.1f}M tokens)", "$110-125/month",
         usd(b), b.within(Span(110, 125), 0.005), value=b)  # fmt: skip
    saving = Span.of(a.lo - b.lo, a.hi - b.hi)  # like for like: low with low, high with high
    widest = Span.of(a.lo - b.hi, a.hi - b.lo)
    drop = Span.of((now_m.lo - exp_m.lo) * p.together, (now_m.hi - exp_m.hi) * p.together)
    why = f"A - B = {usd(saving)} (low with low, high with high; at most {usd(widest)}): Together drops "
    why += f"{usd(drop)} and electricity rises {usd(p.extra_power)}"
    _add(sim, "§8.3", "monthly savings of option B", "$80-140", usd(saving), saving.close(Span(80, 140), 0.5), why,
         saving)  # fmt: skip
    payback = Span.of(w.expansion_usd / saving.hi, w.expansion_usd / saving.lo) if saving.lo > 0 else None
    pay = f"{months(payback)} months" if payback else "never"
    why = f"{usd(w.expansion_usd, 0)} / {usd(saving)} per month; the paper's 4-8 is $600 / its $80-140"
    _add(sim, "§8.3", 'ROI of +2 P40s ("4-8 months", "<8 months")', "4-8 months", pay,
         payback is not None and payback.close(Span(4, 8), 0.5), why, payback)  # fmt: skip
    yearly = saving.scale(12)
    _add(sim, "§8.3", "savings per year after ROI", "$960-1,680", usd(yearly, 0), yearly.close(Span(960, 1680), 5),
         "12 x the monthly savings", yearly)  # fmt: skip
    why = "with the paper's own ranges A - B spans $15-85 ($140 - $125 to $195 - $110), like for like $30-70: "
    why += "$85 is A's top minus B's bottom, $55 matches no pairing"
    _add(sim, "§11.2", '"Savings: $55-85/month after expansion"', "$55-85", usd(saving),
         saving.close(Span(55, 85), 0.5), why, saving)  # fmt: skip
    why = "the paper's 7-11 is $600 / its $85-55; §8.3 says 4-8 and §8.1 3-6 months for the same cards"
    _add(sim, "§11.2", "ROI (also §1.4)", "7-11 months", pay, payback is not None and payback.close(Span(7, 11), 0.5),
         why, payback)  # fmt: skip
    _add(sim, "§11.2", "annual savings after ROI", "$660-1,020", usd(yearly, 0), yearly.close(Span(660, 1020), 5),
         value=yearly)  # fmt: skip
    return a, b


def _cloud_only(sim: Simulation, w: Workload, p: _Prices, premium: Span, a: Span, b: Span) -> None:
    """§1.2 and §11.2: the hybrid against cloud-only, at the paper's figure and at its own prices."""
    cloud = Span.of(*w.cloud_only_usd)
    vs_b = Span.of(1 - b.hi / cloud.lo, 1 - b.lo / cloud.hi)
    _add(sim, "§11.2", f"option B vs cloud-only {usd(cloud, 0)}/month", "95-98%", pct(vs_b),
         vs_b.within(Span(0.95, 0.98), 0.0005), value=vs_b)  # fmt: skip
    hybrid = Span.of(b.lo, a.hi)
    _add(sim, "§1.2", "hybrid cost (B's low to A's high)", "$110-195/month", usd(hybrid),
         hybrid.within(Span(110, 195), 0.005), value=hybrid)  # fmt: skip
    vs_hybrid = Span.of(1 - hybrid.hi / cloud.lo, 1 - hybrid.lo / cloud.hi)
    _add(sim, "§1.2", "hybrid vs cloud-only", "95-98% savings", pct(vs_hybrid),
         vs_hybrid.within(Span(0.95, 0.98), 0.0005),
         f"1 - {usd(hybrid.hi)} / {usd(cloud.lo, 0)} = {vs_hybrid.lo * 100:.1f}%", vs_hybrid)  # fmt: skip
    priced = Span(0.50, 15.00).scale(w.cloud_only_volume_m)
    why = "even every token at $15/M (Claude Opus input) is $3,000; $3,000-5,000 is not from the price table"
    _add(sim, "§1.2", f"cloud-only {w.cloud_only_volume_m:g}M tokens at $0.50-15.00/M", "$3,000-5,000/month",
         usd(priced, 0), priced.close(Span(3000, 5000), 1), why, priced)  # fmt: skip
    own = w.cloud_only_volume_m * p.together + premium.lo
    saves = Span.of(1 - a.hi / own, 1 - b.lo / own)
    _add(sim, "§11.2", f"cloud-only at the paper's own prices ({w.cloud_only_volume_m:g}M on Together + premium)",
         "-", f"{usd(own)}: hybrid saves {pct(saves)}", None,
         "the 95-98% rests on the $3,000-5,000 figure, not on the price table", Span.of(own))  # fmt: skip


def _local_cost(sim: Simulation, w: Workload, p: _Prices, cfg: OrchestraConfig) -> None:
    """§1.2 / §8.1: what a local token costs, from the bill and from the cards."""
    eff = Span.of(w.electricity_now_usd / max(w.volumes_m), w.electricity_now_usd / min(w.volumes_m))
    why = f"the electricity bill ({usd(w.electricity_now_usd, 0)}/month) over {min(w.volumes_m):g}-"
    why += f"{max(w.volumes_m):g}M tokens"
    _add(sim, "§1.2", 'local "$0.001-0.003 per million tokens"', "$0.001-0.003/M", f"{usd(eff)}/M",
         eff.within(Span(0.001, 0.003), 0.0005), why, eff)  # fmt: skip
    energy = _local_energy(cfg, w.local_model) if w.local_model else None  # named by models_of
    if energy is not None:
        per_m, watts, tps = energy
        why = f"{watts:g} W at {tps:g} tokens/s and ${cfg.budgets.local_cost.kwh_usd:g}/kWh"
        _add(sim, "§8.1", f"{w.local_model} energy per million tokens", f"{usd(p.local, 3)}/M", f"{usd(per_m)}/M",
             None, why, Span.of(per_m))  # fmt: skip
        capacity = tps * 86400 * 30 / 1e6
        short = capacity < max(w.volumes_m)
        why = "one instance at its nominal speed cannot make the §8.1 volume (batching may)" if short else ""
        _add(sim, "§8.1", f"one {w.local_model} at {tps:g} tokens/s, per month", f"{max(w.volumes_m):g}M tokens",
             f"{capacity:.1f}M tokens", None, why, Span.of(capacity))  # fmt: skip
    _add(sim, "§8.1", "electricity now / with +2 P40s", "$30 / $40 (§8.1)",
         f"{usd(w.electricity_now_usd, 0)} / {usd(w.electricity_expanded_usd, 0)}", None,
         "§8.3 and §11.2 say $40 / $50 for the same cards")  # fmt: skip


def _money(claim: float | None) -> str:
    return "-" if claim is None else usd(claim)


def _near(ours: float, claim: float | None, tolerance: float = 0.005) -> bool | None:
    """The paper's figure matches ours (to the cent); None where the paper has no figure."""
    return None if claim is None else abs(ours - claim) < tolerance


def render(sim: Simulation, *, is_paper: bool, why_unchecked: str = "a workload other than the paper's") -> str:
    """The table; with a workload or prices other than the paper's, only our figures (the checks need
    the paper's)."""
    if not is_paper:
        head: tuple[str, ...] = ("section", "what", "ours")
        rows: list[tuple[str, ...]] = [(r.section, r.what, r.ours) for r in sim.rows]
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
        lines.insert(1, "  ".join("-" * wd for wd in widths))
        prices = ", ".join(f"{k} ${v:g}/M" for k, v in sim.prices.items())
        return "\n".join([*lines, "", f"prices: {prices}", f"({why_unchecked}: no checks)"])
    head = ("section", "what", "paper", "ours", "check")
    rows = [(r.section, r.what, r.paper, r.ours, r.verdict) for r in sim.rows]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(h.ljust(wd) for h, wd in zip(head, widths, strict=True)).rstrip(),
        "  ".join("-" * wd for wd in widths),
    ]
    notes = []
    for r, cells in zip(sim.rows, rows, strict=True):
        mark = ""
        if r.note:
            notes.append(r.note)
            mark = f" [{len(notes)}]"
        lines.append("  ".join(c.ljust(wd) for c, wd in zip(cells, widths, strict=True)).rstrip() + mark)
    prices = ", ".join(f"{k} ${v:g}/M" for k, v in sim.prices.items())
    lines += ["", f"prices: {prices}"]
    wrong = sum(r.verdict == "WRONG" for r in sim.rows)
    lines.append(f"{wrong} of the paper's figures do not follow from its own numbers (WRONG)")
    lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)
