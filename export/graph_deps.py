"""Which tensors of an ONNX graph are computed from which graph inputs: what the FP16 and INT8
conversions read to keep the parts computed from the prompts alone in float32."""

from __future__ import annotations

from typing import Iterable, Set

import onnx


def computed_from(graph: onnx.GraphProto, inputs: Iterable[str]) -> Set[str]:
    """Output names of the nodes that depend only on the graph inputs ``inputs``, initializers and
    constants, and on at least one of ``inputs`` (the graph is topologically sorted)."""
    seeds = {i.name for i in graph.input} & set(inputs)
    fixed = {i.name for i in graph.initializer}
    derived: Set[str] = set(seeds)
    for node in graph.node:
        if node.op_type == "Constant":
            fixed.update(node.output)
            continue
        names = [name for name in node.input if name]
        if names and all(name in derived or name in fixed for name in names) and \
                any(name in derived for name in names):
            derived.update(node.output)
    return derived - seeds


def weights_only(graph: onnx.GraphProto) -> Set[str]:
    """Output names of the nodes computed from initializers and constants alone (no graph
    input upstream): values fixed at export, which the runtimes fold."""
    fixed = {i.name for i in graph.initializer}
    made: Set[str] = set()
    for node in graph.node:
        names = [name for name in node.input if name]
        if node.op_type == "Constant" or all(name in fixed for name in names):
            fixed.update(node.output)
            made.update(node.output)
    return made
