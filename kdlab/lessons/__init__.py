"""Notebook orchestration: the lessons' parameter checks, short runs and shared measurements."""
