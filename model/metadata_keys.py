"""Keys of the metadata a model file and its ONNX graph carry.

A module of their own: model_file writes a model's graph through export, and export writes
these keys into the graph, so export does not import model_file for them.
"""

# A model file's JSON header, in its safetensors metadata and in its ONNX graph's metadata_props.
HEADER_KEY = "dsarad"
# In an ONNX export's metadata: the SHA-256 of the model file it was exported from.
SOURCE_SHA256_KEY = "dsarad_source_sha256"
