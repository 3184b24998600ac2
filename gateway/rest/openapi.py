"""Placeholder: the OpenAPI document is being written."""

from __future__ import annotations


def openapi_document() -> bytes:
    return b'{"openapi": "3.1.0", "info": {"title": "hypertrack-gateway", "version": "0.1.0"}, "paths": {}}'
