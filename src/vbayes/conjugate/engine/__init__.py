"""The conjugate engine: the algorithms that fit any :class:`~vbayes.conjugate.model.ConjugateModel` over any data
source — :mod:`~vbayes.conjugate.engine.cavi` (CAVI, EM, MAP-EM), :mod:`~vbayes.conjugate.engine.svi` (stochastic
VI, online EM), :mod:`~vbayes.conjugate.engine.moves` (delete / merge moves and the schedules that use them) — and
:mod:`~vbayes.conjugate.engine.posterior`, q(β) as the approximation of the one :class:`~vbayes.fit.Fit`. The
drivers are ``vbayes.conjugate.cavi`` and ``vbayes.conjugate.svi``."""
