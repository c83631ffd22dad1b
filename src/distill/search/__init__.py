"""Distiller search (KD-Zero): the grammar of distillers and the evolutionary search over it.

:mod:`distill.search.grammar` holds the expression trees (imported by the ``distiller``
method); the search itself (:mod:`distill.search.evolution`, :mod:`distill.search.rejection`,
:mod:`distill.search.proxy`, :mod:`distill.search.backends`, :mod:`distill.search.engine`)
is imported only by ``distill search``.
"""
