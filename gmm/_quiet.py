"""Silencing TensorFlow's native (C++/absl) log lines, which bypass Python."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null while TensorFlow loads native
    libraries, probes devices or compiles with XLA: the TF 2.18 wheel's CUDA
    plugin registration, cuInit and XLA service messages are written there by
    absl, which TF_CPP_MIN_LOG_LEVEL does not govern. Python exceptions are
    unaffected. Only active when TF_CPP_MIN_LOG_LEVEL is 2 or 3 (gmm's default
    is 2): set it to 0 before importing gmm to see everything."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("2", "3"):
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
