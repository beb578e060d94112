"""Conjugate-exponential models and the engine that fits them.

The contract (:mod:`~vbayes.conjugate.model`: a model is a NamedTuple of pure functions, and :class:`Mode` says
whether q(β) is the full factor or a point mass) lies below the algorithms of :mod:`~vbayes.conjugate.engine`:
``cavi`` (CAVI, EM, MAP-EM), ``svi`` (stochastic VI, online EM) and the delete / merge moves. Every algorithm runs
over any data source (:mod:`vbayes.data`) and returns a :class:`~vbayes.fit.Fit`. Models, which import only the
contract: :mod:`~vbayes.conjugate.gmm` (the Bayesian Gaussian mixture) and :mod:`~vbayes.conjugate.linreg`
(Bayesian linear regression).
"""

from vbayes.conjugate.engine.cavi import cavi, objective, update
from vbayes.conjugate.engine.svi import SVIConfig, svi
from vbayes.conjugate.model import ConjugateModel, Mode

__all__ = ["ConjugateModel", "Mode", "SVIConfig", "cavi", "objective", "svi", "update"]
