"""A plugin that fails to import (test fixture)."""

raise ImportError("provender_broken needs the library 'nonexistent-runtime', which is not installed")
