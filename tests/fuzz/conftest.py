"""Hypothesis profiles for the fuzz tests.

``default`` is bounded so the fuzz tests belong to every normal run; ``nightly``
runs each property for many more examples::

    HYPOTHESIS_PROFILE=nightly pytest tests/fuzz

The profile is applied to these tests only (through :data:`FUZZ`), so loading this
package never changes the settings of the property tests elsewhere in the suite.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "derandomize": False,
}
settings.register_profile("default", max_examples=60, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("nightly", max_examples=5000, **_COMMON)  # type: ignore[arg-type]

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
FUZZ = settings.get_profile(PROFILE)
