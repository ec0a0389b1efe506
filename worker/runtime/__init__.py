"""The async shell: start-up and shutdown, the planning loop and the executor that drives the
hardware.
"""
