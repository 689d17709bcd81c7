"""Prunable conformer encoder, RNN-T and SSL (BEST-RQ) heads."""
