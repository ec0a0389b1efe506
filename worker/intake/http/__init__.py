"""The HTTP listener: the seed's task_destinations endpoints, their auth, limits, errors and
OpenAPI.
"""
