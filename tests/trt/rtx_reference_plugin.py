"""A known-good reference IPluginV3 written with TensorRT-RTX's own Python plugin API, taken
through the same path as repo-gen's plugin graphs: the ONNX parser's plugin fallback finds the
registered creator by op type, then an ahead-of-time build for SM89.

Run as a script (a child process: TensorRT-RTX may abort it):

    python tests/trt/rtx_reference_plugin.py [--stage parse|build]

It prints one line `REFERENCE_PLUGIN <stage> ok ...` for each stage it gets through. The plugin is
an identity on FP32 tensors in linear format, the smallest plugin TensorRT accepts: if this fails
the way repo-gen's LayerNorm/attention plugins do, the failure is TensorRT-RTX's, not theirs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

OP = "RepoGenReferenceIdentity"


def load_rtx():
    importlib.import_module("tensorrt_rtx_libs")  # puts libtensorrt_rtx on the loader path first
    return importlib.import_module("tensorrt_rtx_bindings")


def make_classes(trt):
    class IdentityPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = OP
            self.plugin_version = "1"
            self.plugin_namespace = ""
            self.num_outputs = 1

        def get_capability_interface(self, type):
            return self

        def clone(self):
            return IdentityPlugin()

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [inputs[0]]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            return desc.format == trt.TensorFormat.LINEAR and desc.type == trt.DataType.FLOAT

        def configure_plugin(self, inputs, outputs):
            pass

        def on_shape_change(self, inputs, outputs):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def set_tactic(self, tactic):
            pass

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([])

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            raise RuntimeError("never executed: the build is ahead of time, with no GPU")

    class IdentityCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = OP
            self.plugin_namespace = ""
            self.plugin_version = "1"
            self.field_names = trt.PluginFieldCollection([])

        def create_plugin(self, name, fc, phase):
            return IdentityPlugin()

    return IdentityPlugin, IdentityCreator


def make_onnx(path: Path) -> Path:
    import onnx
    import onnx_graphsurgeon as gs

    x = gs.Variable("input", dtype=np.float32, shape=["batch", 16])
    mid = gs.Variable("mid", dtype=np.float32)
    out = gs.Variable("logits", dtype=np.float32, shape=["batch", 16])
    nodes = [gs.Node(OP, inputs=[x], outputs=[mid], name="reference_plugin"),
             gs.Node("Relu", inputs=[mid], outputs=[out], name="relu")]
    onnx.save(gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=17)), str(path))
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=("parse", "build"), default="build")
    args = ap.parse_args()
    trt = load_rtx()
    log = trt.Logger(trt.Logger.VERBOSE if os.environ.get("REFERENCE_PLUGIN_VERBOSE") else trt.Logger.WARNING)
    builder = trt.Builder(log)
    _, creator_cls = make_classes(trt)
    creator = creator_cls()
    if not builder.get_plugin_registry().register_creator(creator, ""):
        print("REFERENCE_PLUGIN register failed", flush=True)
        return 1
    print(f"REFERENCE_PLUGIN register ok ({OP})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        graph = make_onnx(Path(tmp) / "reference.onnx")
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, log)
        if not parser.parse_from_file(str(graph)):
            errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
            print(f"REFERENCE_PLUGIN parse failed: {errors}", flush=True)
            return 1
        print(f"REFERENCE_PLUGIN parse ok ({network.num_layers} layers)", flush=True)
        if args.stage == "parse":
            return 0
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("input", trt.Dims([1, 16]), trt.Dims([4, 16]), trt.Dims([8, 16]))
        config.add_optimization_profile(profile)
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM89, 0)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            print("REFERENCE_PLUGIN build failed (no engine)", flush=True)
            return 1
        print(f"REFERENCE_PLUGIN build ok ({len(memoryview(engine))} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
