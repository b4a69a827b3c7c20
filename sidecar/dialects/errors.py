"""Errors raised by the pure translations between dialects.

`TranslationError` means the caller's request asks for something the target dialect cannot express
without silently changing its meaning: the sidecar answers 400 in the caller's dialect and sends
nothing upstream. `InvalidUpstreamResponse` means an upstream answer cannot be expressed in the
caller's dialect (a malformed tool-call argument string, Bedrock's `malformed_*` stop reasons): it
is the upstream's fault, so it is classified like an unparseable 2xx (`invalid_response`).
"""


class TranslationError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidUpstreamResponse(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
