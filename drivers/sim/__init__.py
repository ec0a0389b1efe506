"""The simulated library: a changer, drives and cartridges in a state file.

The same state serves the in-process backend and the stand-in `mtx`/`mt`
executables, so that the mtx backend is tested end to end against it.
"""
