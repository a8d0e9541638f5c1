"""The Dagster definitions, the CLI and their helpers.

Importing the package bounds glibc's heap (resources.device.bound_heap) before any model is loaded: the CLI, the
Dagster code server and each run worker import it first.
"""
from resources.device import bound_heap

bound_heap()
