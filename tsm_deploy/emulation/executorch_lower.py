"""Lower a saved ``torch.export`` program to an ExecuTorch program delegated to XNNPACK.

Run as a child process by converters.py with ExecuTorch's wheel on PYTHONPATH (it imports torch and
executorch only, never tsm_deploy). Writes ``--out`` (the .pte) and ``--report`` (JSON): the
XNNPACK partitions, the operators inside them, and the operators left outside (run by ExecuTorch's
CPU kernels), each by name with its count.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import re
import sys
from collections import Counter


def _op_name(target) -> str:
    """``aten.mean.dim`` for an edge operator (its str() is ``<EdgeOpOverload: aten.mean.dim>: schema = ...``)."""
    text = str(target)
    match = re.match(r"<\w+: ([^>]+)>", text)
    return match.group(1) if match else getattr(target, "__name__", text)


def _ops(graph) -> Counter:
    return Counter(_op_name(node.target) for node in graph.nodes
                   if node.op == "call_function" and node.target is not operator.getitem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", required=True, help="torch.export.save file")
    parser.add_argument("--out", required=True, help=".pte to write")
    parser.add_argument("--report", required=True, help="JSON to write: what XNNPACK took and what it left")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the exporter's import logs optional kernels it does not find

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.load(args.program)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    graph_module = edge.exported_program().graph_module
    outside = _ops(graph_module.graph)
    delegate_calls = outside.pop("executorch_call_delegate", 0)
    inside: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            inside += _ops(getattr(graph_module, node.target).original_module.graph)
    report = {"backend": "XnnpackBackend", "partitions": delegate_calls,
              "delegated_ops": sum(inside.values()), "delegated": dict(sorted(inside.items())),
              "not_delegated": dict(sorted(outside.items()))}
    executorch_program = edge.to_executorch()
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(executorch_program.buffer)
    os.replace(tmp, args.out)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
