"""lamina's benchmarks: ratios against the peer tools, measured in the same run."""
