"""A runnable agent with three useful tools: files, arithmetic, and a lookup in an embedding collection.

    python examples/agent_tools_demo.py -m mlx-community/Qwen2.5-1.5B-Instruct-4bit "What is 17 * 23?"
    python examples/agent_tools_demo.py -m MODEL --root . "Which files in docs/ mention pins?"

Any model whose chat template supports tools works (Qwen 2.5, Llama 3.1+, Mistral, ...).
The same tools work from the CLI: provender chat -m MODEL --tool agent_tools_demo:calculate ...
"""

from __future__ import annotations

import argparse
import ast
import operator
import sys
from pathlib import Path

from provender import ProvenderError
from provender_agent import Agent, tool

ROOT = Path.cwd()
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression exactly (+ - * / // % ** and parentheses).

    Args:
        expression: for example "17 * (23 + 4) / 3"
    """

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))  # type: ignore[no-any-return]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))  # type: ignore[no-any-return]
        raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")

    return ev(ast.parse(expression, mode="eval").body)


def list_files(folder: str = ".") -> list[str]:
    """List the files under a folder (relative to the working directory).

    Args:
        folder: the folder to list
    """
    base = (ROOT / folder).resolve()
    if not base.is_relative_to(ROOT.resolve()):
        raise ValueError("only folders under the working directory can be listed")
    return sorted(str(p.relative_to(ROOT)) for p in base.rglob("*") if p.is_file())[:200]


def read_file(path: str) -> str:
    """Read a text file (relative to the working directory), at most 4000 characters.

    Args:
        path: the file to read
    """
    target = (ROOT / path).resolve()
    if not target.is_relative_to(ROOT.resolve()):
        raise ValueError("only files under the working directory can be read")
    return target.read_text(errors="replace")[:4000]


def search_notes(query: str, collection: str = "provender-docs", n: int = 3) -> list[dict[str, object]]:
    """Find the passages of an embedding collection closest in meaning to a query.

    Args:
        query: what to look for
        collection: the collection (made with `provender embed -c NAME`)
        n: how many passages
    """
    from provender_embedding import Collection

    hits = Collection(collection).similar(query, n)
    return [{"id": h.id, "score": round(h.score, 3), "text": h.content} for h in hits]


def main() -> int:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="folder the file tools may read")
    parser.add_argument("--max-steps", type=int, default=6)
    args = parser.parse_args()
    ROOT = args.root
    tools = [tool(calculate), tool(list_files), tool(read_file), tool(search_notes)]
    try:
        agent = Agent(
            args.model,
            tools,
            max_steps=args.max_steps,
            system="You are a helpful assistant. Use the tools when they help; answer briefly.",
        )
        for event in agent.stream(args.prompt):
            if event.kind == "tool_call":
                print(f"\n  -> {event.call.name}({event.call.arguments})", file=sys.stderr)
            elif event.kind == "tool_result":
                print(f"  <- {event.run.error or str(event.run.result)[:200]}", file=sys.stderr)
            elif event.kind == "final":
                print(f"\n{event.text}\n[{event.result.outcome} in {len(event.result.steps)} steps]")
    except ProvenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
