"""Where the tests find the posteriordb reference posteriors, and the mark for the tests that need them."""

import pytest

from vbayes.errors import VBayesError
from vbayes.examples.posteriordb import ENV_VAR, posteriordb_root

try:  # $VBAYES_POSTERIORDB, else ../shared/posteriordb, else (tests/conftest.py) the copy in tests/data/posteriordb
    ROOT = posteriordb_root()
except VBayesError as e:  # the files are not part of the package: only a test run without tests/data gets here
    ROOT, MISSING = None, str(e)
else:
    MISSING = ""

needs_posteriordb = pytest.mark.skipif(
    ROOT is None,
    reason=f"needs the posteriordb reference posteriors (tests/data/posteriordb ships them; or set {ENV_VAR} to a "
    f"clone of github.com/stan-dev/posteriordb): {MISSING}",
)
