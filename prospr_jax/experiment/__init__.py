"""The experiment harness: config checks, data, the training loop, sweeps, reports, provenance.

Nothing in the library (`prospr_jax` outside this package) imports it.
"""
