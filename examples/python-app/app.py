"""A small stdlib-only app: counts the words of its arguments (or stdin) as JSON."""

import collections
import json
import sys

text = " ".join(sys.argv[1:]) if len(sys.argv) > 1 else sys.stdin.read()
counts = collections.Counter(text.lower().split())
print(json.dumps({"python": sys.version.split()[0], "words": dict(counts.most_common(5))}))
