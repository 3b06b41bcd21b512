"""Developer tools that ship with the package but sit outside the running bot.

``emulator`` is a local Discord API (REST + gateway) that the end-to-end tests and
``atelier bench bot`` both drive; ``bench`` holds the benchmarks of the wired system. Only the
composition root (``bot.cli``'s bench dispatch) imports this package; an import-linter contract
keeps the runtime away from it.
"""
