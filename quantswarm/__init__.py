"""quantswarm core: what the four jobs (evals, router, repair, serving) share.

Results table schema, model registry, llama.cpp engine, data loaders, energy meter, paths and
the CLI. Imports flow one way: this package imports none of the job packages (the CLI imports
them lazily, inside its commands).
"""

__version__ = "0.1.0"
