"""Engines: where the TFF computations run."""
