"""Lazy start (issue 14): mount an image before its data is here, fetch on first read."""
