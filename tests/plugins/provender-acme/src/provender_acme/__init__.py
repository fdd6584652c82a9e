"""A third-party provender plugin with a settings section, written from docs/plugins.md alone."""
