"""The one exception type vbayes raises for bad input; the CLI prints its message without a traceback."""


class VBayesError(ValueError):
    """Bad input or an inference run that cannot continue; the message names the cause."""
