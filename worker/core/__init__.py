"""The sans-IO core: the planner, its input and output, and the rules it obeys (pure, no
awaits, no clock).
"""
