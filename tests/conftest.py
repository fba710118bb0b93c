"""Keep the suite hermetic: bayesify's cache goes to a folder of this session's own."""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("BAYESIFY_CACHE_DIR", tempfile.mkdtemp(prefix="bayesify-test-cache-"))
