"""The service's limits and their defaults, in one place for `serve` and its command line
(this module imports nothing, so the torch- and FastAPI-free client can read it)."""

DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes per request
DEFAULT_MAX_BATCH = 256  # feature tensors per request
# slow clients (issue 37, item 4): a body must arrive within this many seconds, at most this
# many bodies are read at once (a request beyond is answered 503 at once), and uvicorn takes
# at most this many connections (slow headers hold one each)
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_UPLOADS = 64
DEFAULT_MAX_CONNECTIONS = 1024
# dynamic batching (issue 37, item 7): the model waits at most this long for requests that
# are still arriving while others wait (a lone request never waits); below 0: no batching
DEFAULT_BATCH_WAIT_MS = 2.0
