"""airspeed velocity (asv) benchmarks of normdrop; run from ``asv_benchmarks/``."""
