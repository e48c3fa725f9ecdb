"""HTTP/1.1 for the sidecar's HTTP surfaces (the actuator): one
asyncio protocol on httptools (llhttp) and a small router."""

from layotto_fast.http.messages import TEXT, Request, Response
from layotto_fast.http.protocol import HttpProtocol, Limits
from layotto_fast.http.router import Handler, Match, Router

__all__ = ["TEXT", "Handler", "HttpProtocol", "Limits", "Match", "Request", "Response", "Router"]
