"""The mtx/mt backend: pure parsers of mtx 1.3.12 and mt-st 1.7 output, and the
asyncio shell that runs the tools (`backend.MtxLibrary`).

The parsers never do I/O; the backend never parses text itself. FORMATS.md in the
shared corpus is the reference for every format decision made here.
"""
