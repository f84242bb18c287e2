"""The runtime's one error class (kept apart so that every runtime_stub module can raise it)."""


class RuntimeStubError(RuntimeError):
    """A bundle could not be loaded or run; the message says why."""
