"""Tests of the library (`pixelclip/`): no Ray, no services."""
