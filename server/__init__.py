"""HTTP-level concerns, beside ``ui/`` and ``engines/``: who is asking (login, sessions, API keys), which
requests may reach the app at all (host, origin, session, file and queue checks), LAN sharing (addresses,
QR code, certificate). ``app.py`` only composes what is here; nothing here imports ``ui`` or the engines.
"""
