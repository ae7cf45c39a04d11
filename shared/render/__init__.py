"""Rendering: the review as a heatmap (HTML, and ANSI colours for the terminal) on one colour scale, and
charts. May import `shared.relevance` (token spans, methods); no database, no settings."""
