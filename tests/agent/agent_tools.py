"""Tools for `provender chat --tool agent_tools:add` in the tests."""


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
