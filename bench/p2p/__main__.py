import sys

from bench.p2p import main

sys.exit(main(sys.argv[1:]))
