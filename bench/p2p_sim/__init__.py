"""The scheduler simulator: the pure scheduler and policy under a simulated network
(``python -m bench.p2p_sim``)."""
