"""Text: tokenization, the WordNet gloss source, a pretrained MiniLM encoder loaded offline, and
small text and language models."""
