"""The embedded stack for `make run` and the tests: moto as the AWS, an API Gateway front,
and the test peers (real Dovecot and pymap processes, doubles of the proxy and appliance)."""
