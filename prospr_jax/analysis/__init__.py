"""Analyses of masks: sanity-check rearrangements and effective (connected) sparsity."""
