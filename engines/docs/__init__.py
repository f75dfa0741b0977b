"""Documents: parsers, the SQLite index, the background indexer, the embedding model and hybrid retrieval."""
