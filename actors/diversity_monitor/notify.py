"""Notifiers: a Slack-compatible webhook (POST ``{"text": ...}``) and e-mail over SMTP.

    notifiers = build_notifiers(cfg.alerts.notifiers, session)
    await notifiers["slack"].send(subject, text)     # raises NotifyError

Secrets (the webhook URL, SMTP user and password) are read from the environment variables the config
names at every send, so a rotated secret is used without a restart; they never appear in an error
message, a log line or an event.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Protocol

import aiohttp

from actors.diversity_monitor.errors import NotifyError
from schemas.config.ops import NotifierCfg, SmtpNotifierCfg, WebhookNotifierCfg

TIMEOUT_S = 10.0
ATTEMPTS = 3


class Notifier(Protocol):
    name: str

    async def send(self, subject: str, text: str) -> None: ...


class WebhookNotifier:
    def __init__(
        self, name: str, cfg: WebhookNotifierCfg, session: aiohttp.ClientSession, env: Mapping[str, str] | None = None
    ) -> None:
        self.name, self.cfg, self.session = name, cfg, session
        self.env = env if env is not None else os.environ

    def url(self) -> str:
        url = self.cfg.url or (self.env.get(self.cfg.url_env) if self.cfg.url_env else None)
        if not url:
            where = f"environment variable {self.cfg.url_env}" if self.cfg.url_env else "url"
            raise NotifyError(f"{self.name}: no webhook URL ({where} is not set)")
        return url

    async def send(self, subject: str, text: str) -> None:
        body = {"text": f"*{subject}*\n{text}"}
        try:
            async with self.session.post(self.url(), json=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as r:
                if r.status >= 300:
                    raise NotifyError(f"{self.name}: the webhook answered HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # never str(exc): it may hold the URL
            raise NotifyError(f"{self.name}: webhook request failed ({type(exc).__name__})") from None


class SmtpNotifier:
    def __init__(self, name: str, cfg: SmtpNotifierCfg, env: Mapping[str, str] | None = None) -> None:
        self.name, self.cfg = name, cfg
        self.env = env if env is not None else os.environ

    async def send(self, subject: str, text: str) -> None:
        await asyncio.to_thread(self._send, subject, text)

    def _credentials(self) -> tuple[str, str] | None:
        if not self.cfg.username_env:
            return None
        user = self.env.get(self.cfg.username_env)
        password = self.env.get(self.cfg.password_env or "", "")
        if not user:
            raise NotifyError(f"{self.name}: environment variable {self.cfg.username_env} is not set")
        return user, password

    def _send(self, subject: str, text: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.cfg.from_addr
        msg["To"] = ", ".join(self.cfg.to)
        msg["Subject"] = subject
        msg.set_content(text)
        credentials = self._credentials()
        try:
            with smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=TIMEOUT_S) as smtp:
                if self.cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=self.cfg.ca_file))
                if credentials is not None:
                    smtp.login(*credentials)
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(f"{self.name}: the mail server refused ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{self.name}: sending mail failed ({type(exc).__name__})") from None


def build_notifiers(cfgs: Mapping[str, NotifierCfg], session: aiohttp.ClientSession) -> dict[str, Notifier]:
    out: dict[str, Notifier] = {}
    for name, cfg in cfgs.items():
        if isinstance(cfg, WebhookNotifierCfg):
            out[name] = WebhookNotifier(name, cfg, session)
        else:
            out[name] = SmtpNotifier(name, cfg)
    return out


async def deliver(notifier: Notifier, subject: str, text: str, *, attempts: int = ATTEMPTS) -> str | None:
    """Send with retries (0.5 s, 1 s, ...). Returns None when delivered, else why it was not."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            await notifier.send(subject, text)
            return None
        except NotifyError as exc:
            if attempt == attempts:
                return str(exc)
        await asyncio.sleep(delay)
        delay *= 2
    return "not sent"
