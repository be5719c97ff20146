"""Phase 3's automatic grading, pure: which results the monitor has the evaluator grade (drawn by request
id, never its own evaluations, never an evaluator's answer), what a verdict does to the measured quality,
and the config check on a share without evaluators."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec

from actors.diversity_monitor import quality
from actors.diversity_monitor.grading import MAX_IN_FLIGHT, ORIGIN, Grader, agreed, drawn, plan, task_text
from actors.diversity_monitor.metrics import Figures, Metrics
from bus import subjects
from policy.evaluation import Verdict, evaluation_request
from schemas.codec import encode
from schemas.config import load_config
from schemas.config.check import problems
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.events import EvaluationScored
from schemas.request import ChatMessage, GenerateRequest, make_request
from schemas.result import GenerateError, GenerateResult, Provenance, Response
from schemas.review import ModelQuality

LOCAL = load_config("local")
PHASE = "phase_3_interactive_feedback"
IDS = [f"req-{i:04d}" for i in range(2000)]


def with_share(share: float, cfg: OrchestraConfig = LOCAL) -> OrchestraConfig:
    phase = msgspec.structs.replace(cfg.phases[PHASE], evaluate_share=share)
    return msgspec.structs.replace(cfg, phases={**cfg.phases, PHASE: phase})


def result(request_id: str = "req-0001", model: str = "gemma3-270m", **fields: object) -> GenerateResult:
    base: dict[str, object] = {
        "request_id": request_id,
        "text": "def reverse(s):\n    return s[::-1]",
        "model": model,
        "family": "gemma",
        "tier": "local",
        "target": "cpu0",
    }
    return GenerateResult(**{**base, **fields})  # type: ignore[arg-type]


def test_the_draw_is_deterministic_by_request_id_and_near_the_share() -> None:
    picked = [i for i in IDS if drawn(i, 0.1)]
    assert picked == [i for i in IDS if drawn(i, 0.1)]  # the same ids every time (a redelivery too)
    assert 120 <= len(picked) <= 280  # about 10% of 2000
    assert set(picked) <= {i for i in IDS if drawn(i, 0.5)}  # a larger share keeps the ones drawn
    assert not any(drawn(i, 0.0) for i in IDS) and all(drawn(i, 1.0) for i in IDS)


def test_a_drawn_answer_goes_to_the_phases_first_evaluator() -> None:
    cfg = with_share(1.0)
    assert plan(result(), subjects.ORIGIN_GATEWAY, cfg, PHASE) == "smollm2-135m"
    assert plan(result(), "trainer", cfg, PHASE) == "smollm2-135m"  # a client's own request too
    assert plan(result(), subjects.ORIGIN_GATEWAY, with_share(0.0), PHASE) is None  # nothing drawn
    assert plan(result(), subjects.ORIGIN_GATEWAY, cfg, "phase_1_subject_expertise") is None  # no evaluators


def test_no_loops_and_no_self_grading() -> None:
    cfg = with_share(1.0)
    assert plan(result(), ORIGIN, cfg, PHASE) is None  # the monitor's own evaluation results
    assert plan(result(model="smollm2-135m"), subjects.ORIGIN_GATEWAY, cfg, PHASE) is None  # the evaluator's answer
    lab = with_share(1.0, load_config("lab"))
    second = lab.phases[PHASE].evaluators[1]  # any of the phase's evaluators, not only the first
    assert plan(result(model=second), subjects.ORIGIN_GATEWAY, lab, PHASE) is None


def test_cached_combined_empty_and_failed_results_are_not_graded() -> None:
    cfg = with_share(1.0)
    child = Response(
        request_id="c1",
        text="x",
        provenance=Provenance(model="gemma3-270m", family="gemma", tier="local", target="cpu0"),
    )
    error = GenerateError(request_id="req-0001", error=ErrorInfo.of("timeout", "deadline passed"))
    for outcome in (result(cached=True), result(responses=[child]), result(text="  "), error):
        assert plan(outcome, subjects.ORIGIN_GATEWAY, cfg, PHASE) is None
    shadow = result(request_id="req-0001-pv", model="gpt-4o", tier="premium", target="openai")  # premium validation
    assert plan(shadow, subjects.ORIGIN_GATEWAY, cfg, PHASE) is None
    assert plan(result(parent_id="parent"), subjects.ORIGIN_GATEWAY, cfg, PHASE) == "smollm2-135m"  # a fan-out child


def test_score_4_or_more_is_a_passed_check_counted_as_an_evaluation() -> None:
    assert agreed(Verdict(4, "ok")) and agreed(Verdict(5, "")) and not agreed(Verdict(3, "partly"))
    q: ModelQuality | None = None
    for score in (5, 2, 4):
        q = quality.checked(q, "gemma3-270m", agreed(Verdict(score, "")), 10, 1.0, compared=False, evaluated=True)
    assert q is not None and q.recent == [1.0, 0.0, 1.0] and q.measured == round(10 * 2 / 3, 3)
    assert (q.evaluated, q.approved) == (3, 2)
    assert (q.compared, q.agreed, q.accepted, q.rejected) == (0, 0, 0, 0)  # not a premium check nor a review


def test_the_task_text_is_the_last_user_turn() -> None:
    chat = make_request(
        messages=[ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="Reverse a string")]
    )
    assert task_text(chat) == "Reverse a string"
    assert task_text(make_request(prompt="def reverse(s):")) == "def reverse(s):"
    judge = evaluation_request(task_text(chat), "s[::-1]", model="smollm2-135m", priority="low")
    assert judge.priority == "low" and judge.messages is not None and "Reverse a string" in judge.messages[1].content


def test_a_share_to_grade_needs_evaluators() -> None:
    phase = msgspec.structs.replace(LOCAL.phases["phase_1_subject_expertise"], evaluate_share=0.5)
    cfg = msgspec.structs.replace(LOCAL, phases={**LOCAL.phases, "phase_1_subject_expertise": phase})
    assert any(p.path == "phases.phase_1_subject_expertise.evaluate_share" for p in problems(cfg))
    assert not any(p.path.endswith("evaluate_share") for p in problems(LOCAL))


class FakeMonitor:
    """What the Grader is given by the monitor: config, the phase, metrics, JetStream get, publish, emit, checks."""

    def __init__(self, cfg: OrchestraConfig, stored: GenerateRequest) -> None:
        self.cfg, self.stored = cfg, stored  # every answer graded here answers this request (a fan-out's)
        self.metrics = Metrics(Figures)
        self.published: list[tuple[str, GenerateRequest]] = []
        self.events: list[object] = []
        self.checks: list[tuple[str, bool]] = []

    def grader(self) -> Grader:
        return Grader(  # no phase in KV: rotator.initial_phase (the test overrides it)
            self.cfg, self.metrics, phase=lambda: self.cfg.rotator.initial_phase, get_last_msg=self.get_last_msg,
            publish=self.publish, emit=self.emit, check=self.check,
        )  # fmt: skip

    async def get_last_msg(self, stream: str, subject: str) -> SimpleNamespace:
        if subject != subjects.request(self.stored.priority, self.stored.id, subjects.ORIGIN_GATEWAY):  # the parent
            raise LookupError(subject)
        return SimpleNamespace(data=encode(self.stored))

    async def publish(self, subject: str, obj: GenerateRequest, **_: object) -> None:
        self.published.append((subject, obj))

    async def emit(self, event: object) -> None:
        self.events.append(event)

    async def check(self, model: str, passed: bool, **kw: object) -> None:
        assert kw == {"compared": False, "evaluated": True}
        self.checks.append((model, passed))


def count(m: FakeMonitor, result: str) -> float:
    return m.metrics.evaluations.labels(result)._value.get()


async def test_in_flight_evaluations_are_capped_and_a_verdict_is_recorded() -> None:
    cfg = with_share(1.0)
    cfg = msgspec.structs.replace(cfg, rotator=msgspec.structs.replace(cfg.rotator, initial_phase=PHASE))
    asked = make_request(messages=[ChatMessage(role="user", content="Reverse a string")])
    m = FakeMonitor(cfg, asked)
    grader = m.grader()
    children = [result(f"{asked.id}-{i}", parent_id=asked.id) for i in range(MAX_IN_FLIGHT + 2)]  # a fan-out's
    for child in children:
        await grader.on_outcome(subjects.result(child.request_id, subjects.ORIGIN_GATEWAY), child)
    assert len(m.published) == MAX_IN_FLIGHT and count(m, "dropped") == 2
    await grader.on_outcome(subjects.result(children[0].request_id, subjects.ORIGIN_GATEWAY), children[0])
    assert len(m.published) == MAX_IN_FLIGHT and count(m, "dropped") == 2  # a redelivery is not asked again
    where, judge = m.published[0]
    assert where == subjects.request("low", judge.id, ORIGIN) and judge.model == "smollm2-135m"
    assert judge.messages is not None and "Reverse a string" in judge.messages[1].content

    verdict = result(judge.id, model="smollm2-135m", text='{"score": 5, "reason": "slices"}')
    await grader.on_outcome(subjects.result(judge.id, ORIGIN), verdict)  # its own result: read, never graded
    (event,) = m.events
    assert isinstance(event, EvaluationScored) and (event.score, event.agreed) == (5, True)
    assert event.request_id == children[0].request_id and event.evaluation_id == judge.id
    assert m.checks == [("gemma3-270m", True)] and len(m.published) == MAX_IN_FLIGHT
    assert count(m, "scored") == 1 and len(grader.waiting) == MAX_IN_FLIGHT - 1
    await grader.on_outcome(subjects.result(judge.id, ORIGIN), verdict)  # redelivered: not counted twice
    assert count(m, "unknown") == 1 and len(m.events) == 1
