"""Black-box algorithms on a log-density :class:`~vbayes.targets.Target`, each a functional core (``init_state`` /
``build_step``, NamedTuple states) and a driver that returns a :class:`~vbayes.fit.Fit` with its verdict:
:mod:`~vbayes.infer.advi`, :mod:`~vbayes.infer.laplace`, :mod:`~vbayes.infer.nuts`, the methods built on them
(:mod:`~vbayes.infer.importance`, :mod:`~vbayes.infer.neutra`, :mod:`~vbayes.infer.pathfinder`), and the mode
search they share (:mod:`~vbayes.infer.optimize`). The drivers are ``vbayes.advi``, ``vbayes.laplace``,
``vbayes.nuts`` and the rest; this package imports none of them, so that ``vbayes.infer.advi`` is the module."""
