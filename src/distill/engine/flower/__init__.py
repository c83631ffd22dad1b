"""The Flower adapter: every ``flwr`` import of distill is in this package.

Flower (``pip install 'distill[fed]'``, Message API) carries a federation's messages: a
``ServerApp`` drives the rounds of :class:`distill.federated.server.Federation` through
:class:`~distill.engine.flower.transport.FlowerTransport`, and the ``ClientApp`` of
:mod:`~distill.engine.flower.client` trains on a node's private shard and answers logit
queries. The same apps run in Flower's simulation runtime (:mod:`.simulation`) and in a
deployment of a SuperLink and SuperNodes (``flwr run``).
"""

from __future__ import annotations

from distill.errors import DistillError


def require_flower() -> None:
    """Raise a clear error when Flower is not installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise DistillError(
            "distill fed needs Flower: pip install 'distill[fed]' (flwr with its simulation extra)"
        ) from None
