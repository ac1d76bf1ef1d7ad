"""The native API (v1), one module per resource, and the CompreFace-compatible routes."""
