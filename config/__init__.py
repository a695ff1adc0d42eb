"""Configuration: settings, secrets and paths; the bottom layer, importable by all."""
