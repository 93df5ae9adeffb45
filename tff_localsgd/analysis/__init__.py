"""Analysis of finished runs: fits of scaling laws and convergence rates."""
