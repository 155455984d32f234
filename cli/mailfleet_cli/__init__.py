"""`mailfleet`: the operators' command line for the mailfleet HTTP API (shared/API.md).

It talks only to the public API, so it works the same against `make run` and a
deployed stack. Nothing here is imported by the Lambda functions.
"""

__version__ = "0.1.0"
