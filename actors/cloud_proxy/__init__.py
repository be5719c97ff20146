"""The cloud proxy actor: provider clients (OpenAI-compatible, Anthropic, Gemini), secrets, rate
limits, retries, cooldowns and cost for the Together AI and premium tiers.

    actor.py      the actor: one handle() over messages.py; dispatch in, result / failed attempt / chunks
                  out, KV orch_providers, the embed service
    provider.py   one provider at run time: key, limits, breakers, retries around its client
    clients/      HTTP/1.1 transport (http1.py) + one pure wire format per API (openai, anthropic, gemini), SSE
    secrets.py    key sources (env, file, Vault KV v2) and the key ring that re-reads them
    limits.py     rpm / tpm token buckets (pure)       breaker.py   circuit breaker (pure)
    retry.py      backoff with jitter (pure)           errors.py    error tree + HTTP error mapping (pure)
"""
