"""What mailfleet does, between the thin handlers and the stores."""
