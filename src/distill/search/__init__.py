"""Distiller search (KD-Zero): the evolutionary search over the grammar of distillers.

The grammar is a loss family, :mod:`distill.losses.distiller` (used by the ``distiller``
method); the search — an application — (:mod:`distill.search.evolution`, :mod:`distill.search.rejection`,
:mod:`distill.search.proxy`, :mod:`distill.search.backends`, :mod:`distill.search.engine`)
is imported only by ``distill search``.
"""
