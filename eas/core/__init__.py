"""Layer 0, what every other layer stands on: where data and caches live, atomic writes (io) and
result tables keyed by the parameters that made them (results). Imports nothing from eas."""
