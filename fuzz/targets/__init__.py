"""One module per fuzzed parser; each defines ``one_input(data: bytes) -> None``.

Inputs with several parts (a header and a size, patterns and paths) are split on
lines so the seed files in ``fuzz/corpus/<target>/`` stay readable.
"""

TARGETS = (
    "tar",
    "layer_apply",
    "dockerfile",
    "words",
    "dockerignore",
    "manifest",
    "config",
    "reference",
    "routes",
    "ranges",
    "challenges",
    "tokens",
)

# Largest input per target (bytes) where the default 4096 is too small for a seed.
MAX_LEN = {"tar": 16384, "layer_apply": 16384}
