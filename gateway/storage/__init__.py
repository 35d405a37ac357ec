"""Stored bytes: input images and result videos, content-addressed on disk."""
