"""Extractive question answering: answer spans in long contexts."""
