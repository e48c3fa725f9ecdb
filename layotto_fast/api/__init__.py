"""Servicers: translate API messages to runtime calls. No transport code here."""
