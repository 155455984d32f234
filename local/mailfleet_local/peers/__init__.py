"""Test peers on 127.0.0.1: real Dovecot and pymap processes, and faithful TLS doubles of
the Stalwart migration proxy and the appliance admin API."""
