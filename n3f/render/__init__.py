"""The shared rendering backend: rays, hash encoding, sampling, compositing.

Knows nothing of teachers, students or correspondence: a field is anything that maps points (and
directions) to named per-sample channels, and the compositor renders whatever channels it gets.
"""
