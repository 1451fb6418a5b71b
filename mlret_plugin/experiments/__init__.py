"""One-command experiments for the research questions."""
