"""Errors a user can fix, in a module without heavy imports: the command line catches
them (one line, no traceback) without importing torch, so the phone-side `classify`
command stays torch-free."""


class RunError(ValueError):
    """A run folder that is missing, unfinished or inconsistent."""
