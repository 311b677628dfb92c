"""Test-wide settings: hypothesis profiles.

* ``ci``: derandomised, few examples (a few hundred fuzzed rounds in total);
  the default when ``CI`` is set and in ``make test``;
* ``dev``: as ``ci`` but random, the default for a plain ``pytest`` run;
* ``nightly``: 500 examples per test, i.e. more than 10,000 fuzzed rounds over
  the registered rules in ``tests/test_fuzz_rules.py`` alone
  (``HYPOTHESIS_PROFILE=nightly``).

Tests that set ``max_examples`` themselves keep their count.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True, max_examples=8)
settings.register_profile("dev", max_examples=8)
settings.register_profile("nightly", max_examples=500, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
