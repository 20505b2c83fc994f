"""Bundled datasets.

* :func:`load_adult` -- the UCI Adult ("Census Income") data, bundled offline
  (CC BY 4.0; Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI Machine
  Learning Repository. https://doi.org/10.24432/C5XW20).
* :func:`adult_design` -- the usual one-hot / standardised modelling matrix
  for it, with a 0/1 sensitive attribute.
"""

from ._adult import adult_design, load_adult

__all__ = ["load_adult", "adult_design"]
