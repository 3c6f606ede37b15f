"""rand_ensemble: random-embedding ensembles in pure JAX."""
