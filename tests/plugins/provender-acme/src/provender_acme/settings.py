"""``[acme]``: the acme plugin's settings section."""

from pydantic import Field

from provender import Section  # a pydantic BaseModel whose unknown keys are errors


class AcmeSettings(Section):
    """``[acme]``: how the acme provider greets."""

    greeting: str = Field("hello", min_length=1, description="What the provider says first.")
    repeat: int = Field(1, ge=1, le=10, description="How many times it says it.")
