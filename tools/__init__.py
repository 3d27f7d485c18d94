"""Developer tools that check the package but are not part of it (CI steps)."""
