"""Code generators that turn an IR graph into a deployable bundle, one package per target."""
