"""Stop strings: streamed text cut before the first of them (`StopCut`, `cut_at_stops`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["StopCut", "cut_at_stops"]


class StopCut:
    """Streamed text, cut before the first stop string, fed one piece at a time: holds back
    only what could be the start of a stop string, so streaming stays as prompt as it can."""

    def __init__(self, stops: str | list[str] | tuple[str, ...] | None) -> None:
        self.stops = [stops] if isinstance(stops, str) else [s for s in (stops or []) if s]
        self.held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text to pass on now, whether a stop string was reached)."""
        if not self.stops:
            return piece, False
        self.held += piece
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.held = self.held[: min(hits)], ""
            return out, True
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        return out, False

    def flush(self) -> str:
        """What is still held back, at the end of the text."""
        out, self.held = self.held, ""
        return out


def cut_at_stops(pieces: Iterable[str], stops: str | list[str] | tuple[str, ...] | None) -> Iterator[str]:
    """Pass streamed text through, ending it before the first stop string (`StopCut`)."""
    cut = StopCut(stops)
    if not cut.stops:
        yield from pieces
        return
    for piece in pieces:
        text, stopped = cut.feed(piece)
        if text:
            yield text
        if stopped:
            return
    if tail := cut.flush():
        yield tail
