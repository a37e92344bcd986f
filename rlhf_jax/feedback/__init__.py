"""Simulated feedback: worlds of prompts, demonstrations and labelers that write JSON Lines records."""
