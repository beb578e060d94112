"""Conjugate-exponential models and the engine that fits them.

The contract (:mod:`~vbayes.conjugate.model`: a model is a NamedTuple of pure functions, and :class:`Mode` says
whether q(β) is the full factor or a point mass) lies below the algorithms: :mod:`~vbayes.conjugate.cavi`
(CAVI, EM, MAP-EM), :mod:`~vbayes.conjugate.svi` (stochastic VI, online EM), :mod:`~vbayes.conjugate.moves`
(delete / merge moves and the schedules that use them). Every algorithm runs over any data source
(:mod:`vbayes.data`) and returns a :class:`~vbayes.fit.Fit`. Models: :mod:`~vbayes.conjugate.gmm` (the Bayesian
Gaussian mixture), :mod:`~vbayes.conjugate.linreg` (Bayesian linear regression).
"""

from vbayes.conjugate.cavi import cavi, objective, update
from vbayes.conjugate.model import ConjugateModel, Mode
from vbayes.conjugate.svi import SVIConfig, svi

__all__ = ["ConjugateModel", "Mode", "SVIConfig", "cavi", "objective", "svi", "update"]
