"""The web dashboard, its JSON HTTP API and Prometheus /metrics.

Split by concern, like freqtrade's api_server: `tokens` (the access and CSRF
tokens), `guard` (authentication, CSRF, request bounds), `views` (what is
shown, read from storage and `status`), `journal_tail` (what the ledger does
not index, from the journal), `api` (routes), `events` (server-sent live
updates), `metrics` (Prometheus), `server` (the thread and loop it runs on).
The page itself is hand-written HTML/JS/CSS shipped as package data
(`static/`): no CDN, works offline.
"""

from stockade.ops.dashboard.server import DashboardError, DashboardServer

__all__ = ["DashboardError", "DashboardServer"]
