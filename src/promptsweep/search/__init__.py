"""Objective 2 by optimisation: a resumable search in the embedding space.

A search proposes a parameter vector (a point of the embedding space: doses
or mixture weights), generates and scores it, and tells the optimiser the
result; it repeats until its budget of finished trials is spent. Every
optimiser is one module under :mod:`promptsweep.search.optimisers` behind
one ask/tell protocol; :mod:`promptsweep.search.journal` runs the loop on an
Optuna journal file, so that a killed search, rerun, continues where it
stopped; :mod:`promptsweep.search.spaces` says what a point is and the
conditioning it stands for; :mod:`promptsweep.search.config` checks the
config values the search reads.
"""
