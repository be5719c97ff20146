"""Errors of the diversity_monitor.

MonitorError
 ├── NotifyError            a notifier could not deliver (HTTP status, SMTP refusal, connection);
 │                          the message never holds the webhook URL or a password
 └── EmbedderUnavailable    the sentence embedder cannot be loaded (prose is then grouped lexically)

Foreign errors (aiohttp, smtplib, fastembed) are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class MonitorError(Exception):
    pass


class NotifyError(MonitorError):
    pass


class EmbedderUnavailable(MonitorError):
    pass
