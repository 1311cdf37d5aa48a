"""The toy world: a small synthetic video world whose structure is known, a teacher sfv trains itself in it,
and a metric that reads that structure — so the whole SF-V method can be checked end to end on a CPU."""
