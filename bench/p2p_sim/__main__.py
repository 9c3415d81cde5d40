"""``python -m bench.p2p_sim [N ...]`` (see :mod:`bench.p2p_sim.report`)."""

from bench.p2p_sim.report import main

main()
