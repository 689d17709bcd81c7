"""Decoding, WER/CER, parameter and MAC counts, latency."""
