"""The thin runtime that loads and runs a bundle; needs only numpy (never the compiler)."""
