"""Logging: context, formats, setup and the journal handler."""
