"""The archive manager's API vocabulary: the seed's resource, its query language, error details
and task ids (pure).
"""
