"""Graph passes over ONNX models with onnx-graphsurgeon.

Each pass returns the model and logs node counts before and after, so a no-op shows.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from repo_gen.log import logger


def _count(model: onnx.ModelProto) -> int:
    return len(model.graph.node)



def cleanup_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, Identity removal, dead-node removal, topological sort, shape inference.

    Why: TensorRT's parser and ONNX Runtime both do this themselves, but a clean graph makes the
    precision passes (FP16 fallback search, Q/DQ placement) see real compute nodes only, and
    gives later graph rewrites stable patterns to match.
    """
    before = _count(model)
    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=True)
    # Identity nodes: rewire consumers to the Identity's input. A graph output that an Identity
    # feeds keeps its name, so the producer takes over that name.
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        if not node.inputs or not node.outputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            if src in graph.inputs or isinstance(src, gs.Constant):
                continue
            # The producer of `src` now writes `dst` directly.
            for producer in list(src.inputs):
                producer.outputs = [dst if t is src else t for t in producer.outputs]
            for consumer in list(src.outputs):
                if consumer is node:
                    continue
                consumer.inputs = [dst if t is src else t for t in consumer.inputs]
        else:
            for consumer in list(dst.outputs):
                consumer.inputs = [src if t is dst else t for t in consumer.inputs]
        node.outputs.clear()
        node.inputs.clear()
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out.producer_name = model.producer_name
    out.producer_version = model.producer_version
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(out, full_check=True)
    left = sum(1 for n in out.graph.node if n.op_type == "Identity")
    logger.info(f"cleanup_graph: {before} -> {_count(out)} nodes ({left} Identity left)")
    return out
