"""The arm64-neon target: aarch64 bundles cross-compiled on any host (see README.md)."""
