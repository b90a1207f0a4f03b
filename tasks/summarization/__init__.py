"""Abstractive summarization of news-style articles."""
