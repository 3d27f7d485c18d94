"""Detect objects in image files with a served detection pipeline, using plain tritonclient.

    python examples/detect_client.py IMAGE... [--url 127.0.0.1:8001] [--model ssdlite_mobilevit_xxs_pipeline]

The `<model>_pipeline` ensemble takes the encoded file bytes (TYPE_STRING [1]) and returns four padded
tensors per image: num_detections [1], detection_boxes [K, 4] (x1, y1, x2, y2 in the ORIGINAL image's
pixels), detection_scores [K] and detection_classes [K]; only the first num_detections rows are real.
Class names: the ensemble's `labels` parameter (percent-encoded, comma separated).
"""

from __future__ import annotations

import argparse
import urllib.parse

import numpy as np
import tritonclient.grpc as grpcclient

OUTPUTS = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--url", default="127.0.0.1:8001")
    ap.add_argument("--model", default="ssdlite_mobilevit_xxs_pipeline")
    ap.add_argument("--threshold", type=float, default=0.3)
    args = ap.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    params = client.get_model_config(args.model).config.parameters
    labels = [urllib.parse.unquote(s) for s in params["labels"].string_value.split(",")] if "labels" in params else []
    for path in args.images:
        with open(path, "rb") as f:
            data = f.read()
        inp = grpcclient.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        try:
            res = client.infer(args.model, [inp], outputs=[grpcclient.InferRequestedOutput(o) for o in OUTPUTS])
        except grpcclient.InferenceServerException as e:  # e.g. a file that is not an image: only it fails
            print(f"{path}: error: {e.message()}")
            continue
        n = int(res.as_numpy("num_detections")[0, 0])
        boxes, scores, classes = (res.as_numpy(o)[0] for o in OUTPUTS[1:])
        print(f"{path}:")
        for box, score, cls in zip(boxes[:n], scores[:n], classes[:n], strict=True):
            if score >= args.threshold:
                name = labels[cls] if 0 <= cls < len(labels) else str(cls)
                print(f"  {name:>10s} {score:.3f}  [{box[0]:.1f}, {box[1]:.1f}, {box[2]:.1f}, {box[3]:.1f}]")


if __name__ == "__main__":
    main()
