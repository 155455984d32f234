"""The parts of the appliance driver; `mailfleet.drivers.appliance` is its public face.
Nothing is imported here, so the parts import each other without a package cycle."""
