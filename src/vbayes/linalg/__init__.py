"""Linear algebra: Gaussian precision operators (:mod:`vbayes.linalg.precision`), their Cholesky factors
(:mod:`vbayes.linalg.cholesky`) and symmetric eigensolvers from products only (:mod:`vbayes.linalg.krylov`)."""
