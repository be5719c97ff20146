"""Ensemble consensus, pure (no I/O): which answers agree, how sure each one is, and the vote.

prose.py       explainable contradiction and agreement checks on prose; word overlap as a fallback
code.py        code in an answer, normalised-AST equality, examples from the prompt, behaviour compared
confidence.py  per-answer confidence: token logprobs, else measured accuracy, else the configured rank
vote.py        judge every pair, cluster, weighted vote -> (winner, Consensus)

The I/O it needs is done by the router before calling it: MiniLM vectors from the cache's embed service
(``orch.svc.cache.embed``) and the candidates' behaviour from actors/router/sandbox.py.
"""
