"""Frames, the OpenMM NaCl(aq) testbed, neighbour lists and per-atom regimes."""
