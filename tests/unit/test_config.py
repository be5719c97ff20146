"""Configuration: both profiles load; every kind of mistake is reported with its file and path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.config import ConfigError, load_config
from schemas.config.load import REPO_CONFIGS
from schemas.config.models import LocalModel, parse_params
from schemas.config.units import ByteSize, Duration


@pytest.mark.parametrize("profile", ["local", "lab"])
def test_both_profiles_load_and_validate(profile: str) -> None:
    """The embedded default and the paper's lab both pass every cross-reference check."""
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.rotator.initial_phase in cfg.phases


def test_local_profile_runs_two_families_on_one_cpu_card() -> None:
    """The local profile has one CPU card, SmolLM2 and Gemma from PyPI, chat formats explicit."""
    cfg = load_config("local")
    local = cfg.local_models()
    assert {m.family for m in local.values()} == {"smollm", "gemma"}
    assert local["gemma3-270m"].chat_format == "gemma" and local["gemma3-270m"].completion_only
    assert [c.device for c in cfg.cards.values()] == ["cpu"]


def test_lab_profile_holds_the_paper() -> None:
    """Cards, the 70B pinned to two P40s, the V100 reserved, §8 prices, four phases, §10.2 alerts."""
    cfg = load_config("lab")
    assert sum(1 for c in cfg.cards.values() if c.model.startswith("Tesla P40")) == 6
    assert cfg.cards["V100"].reserved
    llama = cfg.models["llama3.1-70b"]
    assert isinstance(llama, LocalModel) and llama.cards == ["P40_0", "P40_1"] and llama.size == ByteSize(42.5e9)
    gpt = cfg.cloud_models()["gpt-4o"]
    assert (gpt.price.input, gpt.price.output) == (1.10, 4.40)
    assert len(cfg.phases) == 4 and cfg.phases["phase_3_interactive_feedback"].rotation_frequency == 4 * 3600
    assert set(cfg.alerts.rules) >= {"all_models_offline", "gpu_oom_failures", "cost_spike", "single_model_dominating"}
    assert cfg.budgets.spike.daily_usd == 50
    assert len(cfg.local_models()) >= 40


def _broken(tmp_path: Path, file: str, old: str, new: str) -> Path:
    dest = tmp_path / "broken"
    shutil.copytree(REPO_CONFIGS / "lab", dest)
    path = dest / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    return dest


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "phases.yaml",
            "granite-code-20b, codestral",
            "granite-21b, codestral",
            "phases.yaml: phases.phase_3_interactive_feedback.groups.code_generators.rotation_pool[2]: "
            "unknown model 'granite-21b'",
        ),
        (
            "phases.yaml",
            "rotation_frequency: 6 hours",
            "rotation_frequency: 6 parsecs",
            "phases.yaml: phases.phase_2_context_engineering.rotation_frequency: invalid duration '6 parsecs'",
        ),
        ("models.yaml", "size: 42.5GB", "size: lots", "models.yaml: models.llama3.1-70b.size: invalid size 'lots'"),
        (
            "models.yaml",
            "cards: [P40_0, P40_1]",
            "cards: [P40_0]",
            "models.yaml: models.llama3.1-70b.cards: cards ['P40_0'] hold 24 GB, smaller than the model's smallest",
        ),
        (
            "models.yaml",
            "provider: openai,",
            "provider: openia,",
            "models.yaml: models.gpt-4o.provider: unknown provider 'openia'",
        ),
        (
            "hosts.yaml",
            "m5-p40-c: {cards: [P40_4, P40_5]",
            "m5-p40-c: {cards: [P40_4, P40_1]",
            "hosts.yaml: hosts.m5-p40-c.cards[1]: card 'P40_1' already belongs to host 'm5-p40-a'",
        ),
        (
            "hosts.yaml",
            "ws-3050: {cards: [RTX_3050]",
            "ws-3050: {cards: [V100]",
            "hosts.yaml: hosts.ws-3050.cards[0]: card 'V100' is reserved (CET model training only)",
        ),
        (
            "alerts.yaml",
            "metric: oom_errors",
            "metric: oom_errorz",
            "alerts.yaml: alerts.rules.gpu_oom_failures.when[0].metric: unknown metric",
        ),
        (
            "alerts.yaml",
            "notify: [email_admin]}",
            "notify: [pager]}",
            "alerts.yaml: alerts.escalation.critical[1].notify[0]: unknown notifier 'pager'",
        ),
        (
            "budgets.yaml",
            "name: claude-opus",
            "name: claude-opus-9",
            "budgets.yaml: budgets.limits[4].name: unknown model 'claude-opus-9'",
        ),
        (
            "routes.yaml",
            "primary: qwen2.5-coder-14b",
            "primary: qwen9",
            "routes.yaml: routes.code_generation.primary[0]: unknown model 'qwen9'",
        ),
        (
            "orchestra.yaml",
            "initial_phase: phase_1_subject_expertise",
            "initial_phase: phase_9",
            "orchestra.yaml: rotator.initial_phase: unknown phase 'phase_9'",
        ),
        (
            "orchestra.yaml",
            "  default_strategy: cost",
            "  default_strategy: cheapest",
            "orchestra.yaml: router.default_strategy: Invalid enum value 'cheapest'",
        ),
        (
            "providers.yaml",
            "  together:\n    api: openai",
            "  together:\n    api: openai\n    colour: blue",
            "providers.yaml: providers.together: Object contains unknown field `colour`",
        ),
        (
            "phases.yaml",
            "      primary:\n        always_loaded: [llama3.1-70b, mistral-large]",
            "      primary:\n        always_loaded: [llama3.1-70b, gpt-4o]",
            "phases.yaml: phases.phase_2_context_engineering.groups.primary.always_loaded[1]: "
            "model 'gpt-4o' is not a local model",
        ),
        (
            "orchestra.yaml",
            "dedupe_window: 15m",
            "dedupe_window: 5m",
            "orchestra.yaml: bus.streams.dedupe_window: 300s is shorter than the longest allowed request deadline "
            "(router.max_deadline 600s)",
        ),
        (
            "orchestra.yaml",
            "  max_attempts: 3\n",
            "  max_attempts: 3\n  max_deadline: 1h\n",
            "orchestra.yaml: bus.streams.dedupe_window: 900s is shorter than the longest allowed request deadline",
        ),
        (
            "orchestra.yaml",
            "request_timeout: 300s",
            "request_timeout: 20m",
            "orchestra.yaml: gateway.request_timeout: 1200s is longer than router.max_deadline (600s)",
        ),
        ("models.yaml", "  deepseek-r1-70b:\n", "  llama3.1-70b:\n", "models.yaml:"),  # duplicate key
    ],
)
def test_config_errors_name_file_and_path(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    """A broken copy of the lab profile fails with an error that starts with the file and path."""
    broken = _broken(tmp_path, file, old, new)
    with pytest.raises(ConfigError) as err:
        load_config(broken)
    text = str(err.value)
    assert expected in text, text
    assert str(broken) in text


def test_duplicate_yaml_keys_are_refused_with_line_number(tmp_path: Path) -> None:
    """PyYAML would keep the last duplicate silently; the loader names the file and line."""
    broken = _broken(tmp_path, "models.yaml", "  deepseek-r1-70b:\n", "  llama3.1-70b:\n")
    with pytest.raises(ConfigError) as err:
        load_config(broken)
    assert "duplicate key 'llama3.1-70b'" in str(err.value) and "models.yaml:" in str(err.value)


def test_a_section_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    """Top-level sections are merged across files; defining one twice is an error naming both."""
    broken = _broken(tmp_path, "routes.yaml", "routes:", "routes:")
    (broken / "extra.yaml").write_text("routes: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(broken)
    assert "routes: section already defined in" in str(err.value)


def test_missing_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope")
    assert "no such config file or profile directory" in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("12 hours", 43200), ("7d", 604800), ("250ms", 0.25), (30, 30), ("1 week", 604800)],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert Duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"), [("48GB", 48e9), ("22.5GB", 22.5e9), ("500MB", 5e8), ("~3GB", 3e9), ("1GiB", 2**30)]
)
def test_sizes_parse(text: str, size: float) -> None:
    assert ByteSize.parse(text) == int(size)


@pytest.mark.parametrize("bad", ["fast", "-1s", True, "12 parsecs"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Duration.parse(bad)


def test_parameter_counts_parse() -> None:
    assert parse_params("70B") == 70e9 and parse_params("135M") == 135e6 and parse_params("1.5B") == 1.5e9
    with pytest.raises(ValueError, match="invalid parameter count"):
        parse_params("big")


def test_rotation_every_from_the_environment_replaces_every_rotating_phases_frequency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ORCHESTRA_ROTATION_EVERY=30s: phases 1-2 of the local profile rotate every 30 s, the fixed phases
    3-4 stay fixed."""
    monkeypatch.setenv("ORCHESTRA_ROTATION_EVERY", "30s")
    cfg = load_config("local")
    assert {name: p.rotation_frequency for name, p in cfg.phases.items()} == {
        "phase_1_subject_expertise": 30,
        "phase_2_context_engineering": 30,
        "phase_3_interactive_feedback": None,
        "phase_4_production": None,
    }


@pytest.mark.parametrize("value", ["soon", "0s"])
def test_a_bad_rotation_every_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An interval that is not a positive duration stops the load with an error naming the variable."""
    monkeypatch.setenv("ORCHESTRA_ROTATION_EVERY", value)
    with pytest.raises(ConfigError) as err:
        load_config("local")
    assert str(err.value).startswith("ORCHESTRA_ROTATION_EVERY: ")


def test_the_cluster_environment_gives_every_server_and_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `orchestra up --cluster 3` hands its actors: three URLs, streams and KV at three replicas."""
    monkeypatch.setenv("ORCHESTRA_NATS_URL", "nats://127.0.0.1:1001, nats://127.0.0.1:1002,nats://127.0.0.1:1003")
    monkeypatch.setenv("ORCHESTRA_NATS_REPLICAS", "3")
    cfg = load_config("local")
    assert cfg.bus.servers == [f"nats://127.0.0.1:{p}" for p in (1001, 1002, 1003)]
    assert cfg.bus.streams.replicas == 3
    monkeypatch.setenv("ORCHESTRA_NATS_REPLICAS", "three")
    with pytest.raises(ConfigError) as bad:
        load_config("local")
    assert "ORCHESTRA_NATS_REPLICAS" in str(bad.value)
