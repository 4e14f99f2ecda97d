"""Deprecated alias of :mod:`otpipe.two_sample` (renamed: ``otpipe.testing`` read as test helpers).

Kept for one release; import from :mod:`otpipe.two_sample` instead.
"""
from __future__ import annotations

import warnings

from otpipe.two_sample import *  # noqa: F401,F403
from otpipe.two_sample import __all__  # noqa: F401

warnings.warn("otpipe.testing is deprecated: use otpipe.two_sample", DeprecationWarning, stacklevel=2)
