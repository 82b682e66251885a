"""The first run (``make demo`` / ``quantswarm demo``): the whole loop on the embedded default, on CPU.

Ladder -> KLD and accuracy -> routing labels -> a compiled router -> a 3-agent swarm serving
``model="auto"`` -> where the report, plot and results table are. It sits outside the four job
packages because it drives all of them, through their public entry points only.

Entry point: :func:`quantswarm_demo.loop.run_demo` with a :class:`quantswarm_demo.loop.DemoConfig`.
"""
