"""Alerts: channels, delivery, policy and the alert report."""
