"""Errors a user can fix, in a module without heavy imports: the command line catches
them (one line, no traceback) without importing torch, so the phone-side `classify`
command stays torch-free."""


class UserError(ValueError):
    """Base of every error a user can fix: bad input, settings, files or requests. Its
    message names the problem and the fix; the command line prints it in one line (exit
    status 2), never a traceback."""


class RunError(UserError):
    """A run folder that is missing, unfinished or inconsistent."""
