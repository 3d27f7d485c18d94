"""Classify image files with a repo-gen `<model>_pipeline` using plain tritonclient (no repo-gen).

    python examples/classify_with_tritonclient.py mobilevit_s_pipeline cat.jpg dog.png
Server at localhost:8001 (gRPC) unless TRITON_URL says otherwise; top 5 unless TOP_K does.
"""
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient

model, paths = sys.argv[1], sys.argv[2:]
client = grpcclient.InferenceServerClient(os.environ.get("TRITON_URL", "localhost:8001"))
for path in paths:
    image = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")  # one encoded file per row, sent as it is
    image.set_data_from_numpy(np.array([[open(path, "rb").read()]], dtype=np.object_))
    top_k = grpcclient.InferRequestedOutput("logits", class_count=int(os.environ.get("TOP_K", 5)))
    result = client.infer(model, [image], outputs=[top_k])  # classification extension: top-k in the server
    print(path)
    for entry in result.as_numpy("logits")[0]:  # b"score:class_index:label"
        score, _, label = entry.decode().split(":", 2)
        print(f"  {label} ({float(score):.3f})")
