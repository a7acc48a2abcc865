"""Science steps: pure functions of input paths to output paths (no sites, no databases)."""
