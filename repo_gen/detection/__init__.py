"""Detection: MobileViT backbones with an SSDLite head (paper 2110.02178, section 4.2).

Each concern has its own module, as torchvision splits its detectors:
    specs.py       the registry rows (name -> backbone, extra layers, anchors)
    model.py       the PyTorch detector (timm backbone + torchvision SSDLite head) and checkpoint loading
    fixture.py     the offline training data (digits pasted onto scikit-image photos) and the trained fixture
    metrics.py     COCO mAP via pycocotools
    nms_graph.py   NMS + fixed-size padded outputs appended to the exported ONNX graph
    export.py      export, and the ONNX Runtime vs PyTorch check
    letterbox.py   image -> input tensor and detections back to image coordinates (one place)
"""
