"""Thin Hydra entry points. Each parses nothing itself: Hydra composes the config, a plain function runs it."""
