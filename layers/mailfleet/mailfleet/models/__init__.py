"""Pydantic models for everything that crosses a boundary: API bodies, events, table items."""
