"""Messages for people, through one logger (`deepobfuscator`), never bare print.

By default they are printed as they are (no level or time prefix) on the current stdout,
warnings on stderr with "warning: " in front, so the commands read as before. An
application that embeds the toolkit routes or silences them with the logging module:
`logging.getLogger("deepobfuscator").handlers.clear()` and `propagate = True` hands them to
its own handlers; `setLevel(logging.WARNING)` keeps the warnings only.
"""

from __future__ import annotations

import logging
import sys


class _Plain(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        # the stream is looked up per message: a redirected sys.stdout (tests, notebooks)
        # gets the messages
        if record.levelno >= logging.WARNING:
            print(f"warning: {record.getMessage()}", file=sys.stderr, flush=True)
        else:
            print(record.getMessage(), file=sys.stdout, flush=True)


log = logging.getLogger("deepobfuscator")
if not log.handlers:
    log.addHandler(_Plain())
    log.setLevel(logging.INFO)
    log.propagate = False
