"""The run and its evidence: the notebooks, executing them (runner), what they share (nb), the
manifest and the summary."""
