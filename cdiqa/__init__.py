"""cdiqa: causal-disentanglement full-reference image quality, from training to deployment.

Importing cdiqa imports numpy only; torch, onnx, onnxruntime, tensorrt and cuda-python are
imported lazily by the parts that need them.
"""

__version__ = "0.1.0"
