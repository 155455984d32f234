"""mailfleet: a control plane for fleets of mail hosts (Dovecot, pymap, proxies, appliances)."""

__version__ = "0.1.0"
