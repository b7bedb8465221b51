"""The single controller: the driver that owns the run directory, the round loop and all data flow."""
