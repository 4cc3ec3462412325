"""Demo material evalkit generates for itself: a sample repository, task set and agents."""
