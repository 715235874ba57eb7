"""Names shared by the Triton repository writer (``cdiqa.export.triton``) and its client
(``cdiqa.runtime.triton_client``): the models of a repository, the output and the dtypes."""

#: the model a client calls (the ensemble, or the whole runtime in the python flavour)
MODEL = "cdiqa"
#: the ONNX / TensorRT graph model of an ensemble repository
GRAPH_MODEL = "cdiqa_graph"
#: the Python-backend model that applies the domain's head to the graph's stats
HEAD_MODEL = "cdiqa_head"
#: the one output of ``MODEL``: quality in [0, 1], shape (B, 1)
OUTPUT_SCORE = "score"
#: manifest dtype -> Triton datatype (config.pbtxt spells it with a ``TYPE_`` prefix)
TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int32": "INT32", "int64": "INT64"}

__all__ = ["GRAPH_MODEL", "HEAD_MODEL", "MODEL", "OUTPUT_SCORE", "TRITON_DTYPES"]
