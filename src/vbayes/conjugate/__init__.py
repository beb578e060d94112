"""Conjugate-exponential models and the engine that fits them.

The contract (:mod:`~vbayes.conjugate.model`: a model is a NamedTuple of pure functions, and :class:`Mode` says
whether q(β) is the full factor or a point mass) lies below the algorithms of :mod:`~vbayes.conjugate.engine`:
``cavi`` (CAVI, EM, MAP-EM), ``svi`` (stochastic VI, online EM) and the delete / merge moves. Every algorithm runs
over any data source (:mod:`vbayes.data`) and returns a :class:`~vbayes.fit.Fit`. Models, which import only the
contract (and, for LDA's documents, :mod:`vbayes.data`): :mod:`~vbayes.conjugate.gmm` (the Bayesian Gaussian
mixture), :mod:`~vbayes.conjugate.linreg` (Bayesian linear regression, known noise), :mod:`~vbayes.conjugate.ard`
(linear regression with the noise and one precision per feature: ARD) and :mod:`~vbayes.conjugate.lda` (latent
Dirichlet allocation).
"""

from vbayes.conjugate.ard import ard_regression_model
from vbayes.conjugate.engine.cavi import cavi, objective, update
from vbayes.conjugate.engine.svi import SVIConfig, svi
from vbayes.conjugate.lda import lda_model
from vbayes.conjugate.model import ConjugateModel, Mode

__all__ = [
    "ConjugateModel",
    "Mode",
    "SVIConfig",
    "ard_regression_model",
    "cavi",
    "lda_model",
    "objective",
    "svi",
    "update",
]
