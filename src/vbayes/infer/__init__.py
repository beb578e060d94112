"""Algorithms: each a functional core (init_state / build_step) and a driver that returns a Fit."""

from vbayes.infer.advi import advi
from vbayes.infer.conjugate import cavi, em, svi
from vbayes.infer.laplace import laplace
from vbayes.infer.nuts import nuts

__all__ = ["advi", "cavi", "em", "laplace", "nuts", "svi"]
