"""One module per chapter: the tables, sentences and figures its notebook shows, built from results (tested)."""
