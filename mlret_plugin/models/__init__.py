"""Model sources that need no hub: converters from packaged weights to sentence-transformers folders."""
