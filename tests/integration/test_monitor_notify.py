"""The notifiers against real local receivers: Slack-compatible JSON, e-mail over SMTP, retries, and
failures that never show the secrets."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from actors.diversity_monitor.actor import DiversityMonitor
from actors.diversity_monitor.errors import NotifyError
from actors.diversity_monitor.notify import SmtpNotifier, WebhookNotifier, deliver
from schemas.config.ops import SmtpNotifierCfg, WebhookNotifierCfg
from tests.support.profile import write_profile
from tests.support.receivers import smtp_receiver, webhook_receiver
from tests.support.tls import make_ca


async def test_the_webhook_posts_slack_json_and_a_failure_names_no_url() -> None:
    async with webhook_receiver() as hook, aiohttp.ClientSession() as session:
        notifier = WebhookNotifier("slack", WebhookNotifierCfg(url_env="HOOK"), session, env={"HOOK": hook.url})
        await notifier.send("[orchestra] HIGH: Cost spike", "daily spend $52.50")
        assert hook.posts == [{"text": "*[orchestra] HIGH: Cost spike*\ndaily spend $52.50"}]
        hook.status = 500
        with pytest.raises(NotifyError) as failed:
            await notifier.send("s", "t")
    assert str(failed.value) == "slack: the webhook answered HTTP 500"
    assert "secret-token" not in str(failed.value)


async def test_a_webhook_that_fails_once_is_retried() -> None:
    async with webhook_receiver() as hook, aiohttp.ClientSession() as session:
        notifier = WebhookNotifier("slack", WebhookNotifierCfg(url=hook.url), session)
        hook.status = 503
        first = await deliver(notifier, "s", "t", attempts=1)
        hook.status = 200
        assert await deliver(notifier, "s", "t") is None
    assert first == "slack: the webhook answered HTTP 503" and len(hook.posts) == 2


async def test_an_unreachable_webhook_or_a_missing_secret_is_reported_without_the_url() -> None:
    async with webhook_receiver() as hook:
        url = hook.url
    async with aiohttp.ClientSession() as session:
        gone = WebhookNotifier("slack", WebhookNotifierCfg(url=url), session)
        problem = await deliver(gone, "s", "t", attempts=2)
        unset = WebhookNotifier("slack", WebhookNotifierCfg(url_env="NO_SUCH_VAR"), session, env={})
        missing = await deliver(unset, "s", "t", attempts=1)
    assert problem == "slack: webhook request failed (ClientConnectorError)"
    assert missing == "slack: no webhook URL (environment variable NO_SUCH_VAR is not set)"


async def test_email_goes_out_over_smtp_with_subject_and_recipients() -> None:
    async with smtp_receiver() as box:
        cfg = SmtpNotifierCfg(
            host="127.0.0.1", port=box.port, from_addr="orchestra@lab.test", to=["admin@lab.test", "ops@lab.test"]
        )
        await SmtpNotifier("email_admin", cfg).send("[orchestra] CRITICAL: All models offline", "no models loaded")
    assert box.recipients == [["admin@lab.test", "ops@lab.test"]]
    message = box.messages[0]
    assert message["Subject"] == "[orchestra] CRITICAL: All models offline"
    assert message["From"] == "orchestra@lab.test" and "no models loaded" in str(message.get_payload())


async def test_smtp_credentials_come_from_the_environment_and_never_show() -> None:
    """The local server offers no AUTH: the login fails, and the error names neither user nor password."""
    async with smtp_receiver() as box:
        cfg = SmtpNotifierCfg(
            host="127.0.0.1",
            port=box.port,
            from_addr="o@lab.test",
            to=["a@lab.test"],
            username_env="SMTP_USER",
            password_env="SMTP_PASSWORD",
        )
        env = {"SMTP_USER": "orchestra", "SMTP_PASSWORD": "hunter2-secret"}
        with pytest.raises(NotifyError) as failed:
            await SmtpNotifier("email_admin", cfg, env=env).send("s", "t")
        with pytest.raises(NotifyError, match="SMTP_USER is not set"):
            await SmtpNotifier("email_admin", cfg, env={}).send("s", "t")
    assert "hunter2" not in str(failed.value) and "orchestra" not in str(failed.value).replace("email_admin", "")
    assert not box.messages


def test_a_bad_digest_time_stops_the_monitor_before_it_connects(tmp_path: Path) -> None:
    from schemas.config import load_config

    overrides = {"alerts": {"digests": {"daily_at": "9am"}}}
    profile = write_profile(tmp_path / "p", "nats://127.0.0.1:1", overrides=overrides)
    with pytest.raises(ValueError, match="alerts.digests.daily_at: '9am'"):
        DiversityMonitor(load_config(profile))


async def test_email_over_starttls_trusts_the_configured_ca_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """A mail server that requires STARTTLS (a certificate from the lab's own CA): the notifier with
    `starttls: true` and that `ca_file` delivers; with the system CAs only it fails on the certificate,
    and without STARTTLS the server refuses the mail. Each failure is one NotifyError, no traceback."""
    ca = make_ca(tmp_path / "tls")
    async with smtp_receiver(tls=ca.server_context()) as box:
        base = {"host": "127.0.0.1", "port": box.port, "from_addr": "orchestra@lab.test", "to": ["admin@lab.test"]}
        trusted = SmtpNotifierCfg(**base, starttls=True, ca_file=str(ca.ca_file))
        await SmtpNotifier("email_admin", trusted).send("[orchestra] HIGH: Cost spike", "premium disabled")
        assert box.subjects() == ["[orchestra] HIGH: Cost spike"]
        with pytest.raises(NotifyError, match="sending mail failed \\(SSLCertVerificationError\\)"):
            await SmtpNotifier("email_admin", SmtpNotifierCfg(**base, starttls=True)).send("s", "t")
        with pytest.raises(NotifyError, match="the mail server refused \\(530\\)"):
            await SmtpNotifier("email_admin", SmtpNotifierCfg(**base)).send("s", "t")
    assert len(box.messages) == 1
