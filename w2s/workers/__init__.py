"""Ray role actors. Each exposes a few coarse methods; the driver (w2s.controller) owns all data flow."""
