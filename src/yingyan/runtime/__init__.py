"""Model runtimes that do not need dlib: its DNN file format and ONNX conversion."""
