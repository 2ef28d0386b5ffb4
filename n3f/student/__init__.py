"""The N3F student: a hash-grid field rendering density, colour and distilled features."""
