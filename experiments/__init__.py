"""Thin entry points: parse flags or a config, then call one library function."""
