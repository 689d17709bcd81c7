"""Corpus synthesis, audio I/O, manifests, tokenizer, features and batching."""
